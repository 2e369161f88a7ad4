"""Paths on local disk or object storage (gs://, s3://, ...), all through etils.epath.

Without TensorFlow, epath reads gs:// through fsspec + gcsfs (both pinned in requirements.txt); it
honours STORAGE_EMULATOR_HOST. Orbax's array data go through tensorstore's own GCS client and
ArrayRecord's reader through riegeli's (docs/checkpoints.md, "Shared storage", says how each is
pointed at an emulator).

  as_path("runs/a")       -> epath.Path("/abs/runs/a")   (local paths made absolute)
  as_path("gs://b/run")   -> epath.Path("gs://b/run")
  glob("gs://b/tok/shards/*.array_record") -> sorted "gs://..." strings
  atomic_write_text(path, text): a reader never sees half a file (local: temp + rename;
                                 object stores: one object upload, which is atomic)
"""

from __future__ import annotations

import glob as glob_lib
import os
import shutil
import tempfile
import threading

from etils import epath

_MAGIC = "*?["
DEFAULT_PROBE_TIMEOUT_S = 60.0


class StorageError(OSError):
  """Storage that cannot be reached; the message is one line naming the path."""


def is_remote(path) -> bool:
  """True for a URL-style path (gs://, s3://, ...): object storage, no POSIX rename or append."""
  return "://" in os.fspath(path)


def as_path(path) -> epath.Path:
  """epath.Path for a local path (made absolute) or a gs:// URL (kept as it is)."""
  path = os.fspath(path)
  return epath.Path(path if is_remote(path) else os.path.abspath(os.path.expanduser(path)))


def as_str(path) -> str:
  return os.fspath(as_path(path))


def glob(pattern) -> list[str]:
  """Sorted files matching `pattern` (local or remote); remote results keep their scheme."""
  pattern = os.fspath(pattern)
  if not is_remote(pattern):
    return sorted(glob_lib.glob(pattern))
  scheme, rest = pattern.split("://", 1)
  parts = rest.split("/")
  fixed = next((i for i, p in enumerate(parts) if any(c in p for c in _MAGIC)), len(parts))
  root = epath.Path(f"{scheme}://" + "/".join(parts[:fixed]))
  if fixed == len(parts):
    return [os.fspath(root)] if root.exists() else []
  return sorted(os.fspath(p) for p in root.glob("/".join(parts[fixed:])))


def temp_path(path) -> str:
  """A unique temporary name beside local `path` (same filesystem, so os.replace is atomic)."""
  path = os.fspath(path)
  fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                             dir=os.path.dirname(path) or ".")
  os.close(fd)
  return tmp


def is_temp_of(name: str, of: str) -> bool:
  """Whether file `name` is a temporary that temp_path made for a file named `of` (a killed
  writer's leftover)."""
  return name.startswith("." + of + ".") and name.endswith(".tmp")


def _umask() -> int:
  """The process umask, read without setting it (os.umask would race with other threads)."""
  try:
    with open("/proc/self/status") as f:
      return next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
  except (OSError, StopIteration, ValueError):
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_mode(path: str) -> None:
  """Gives a file made by mkstemp (0600) the mode open() would have given it (0666 less umask)."""
  os.chmod(path, 0o666 & ~_umask())


def commit(tmp: str, path: str) -> None:
  """fsync the finished local temporary file, then rename it over `path`."""
  with open(tmp, "rb") as f:
    os.fsync(f.fileno())
  os.replace(tmp, path)


def atomic_write_bytes(path, data: bytes) -> None:
  """`path` holds `data` or what it held before, never a part (locally: fsync + rename)."""
  if is_remote(path):
    epath.Path(os.fspath(path)).write_bytes(data)  # one object upload: all or nothing
    return
  tmp = temp_path(path)
  try:
    with open(tmp, "wb") as f:
      f.write(data)
    default_mode(tmp)
    commit(tmp, os.fspath(path))
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def atomic_write_text(path, text: str) -> None:
  atomic_write_bytes(path, text.encode("utf-8"))


def upload(local_file: str, dest) -> None:
  """Copies a finished local file to `dest` (local: temp + rename; remote: one object upload)."""
  if not is_remote(dest):
    tmp = temp_path(dest)
    shutil.copyfile(local_file, tmp)
    default_mode(tmp)
    commit(tmp, os.fspath(dest))
    return
  with open(local_file, "rb") as src, epath.Path(os.fspath(dest)).open("wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 22)


def check_reachable(path, key: str, timeout_s: float = DEFAULT_PROBE_TIMEOUT_S) -> None:
  """StorageError (one line, naming `key` and `path`) unless the bucket of a remote `path` answers.

  Clients retry an unreachable endpoint for a long time (gcsfs: about 30 s of backoff per call);
  the probe gives up after `timeout_s`, so a typo'd host or a missing emulator fails fast and clearly.
  Local paths need no probe.
  """
  path = os.fspath(path)
  if not is_remote(path):
    return
  scheme, rest = path.split("://", 1)
  bucket = f"{scheme}://{rest.split('/', 1)[0]}"
  result: dict = {}

  def probe():
    try:
      result["exists"] = epath.Path(bucket).exists()
    except Exception as e:  # noqa: BLE001 - any client error means the same thing here
      result["error"] = e

  thread = threading.Thread(target=probe, daemon=True)
  thread.start()
  thread.join(timeout_s)
  if thread.is_alive():
    raise StorageError(f"{key}={path!r}: storage did not answer within {timeout_s:g} s "
                       f"(bucket {bucket}; check the network, credentials or STORAGE_EMULATOR_HOST)")
  if "error" in result:
    cause = " ".join(str(result["error"]).split())[:200]
    raise StorageError(f"{key}={path!r}: cannot reach bucket {bucket}: "
                       f"{type(result['error']).__name__}: {cause}")
  if not result["exists"]:
    raise StorageError(f"{key}={path!r}: bucket {bucket} does not exist or is not visible with "
                       "these credentials")
