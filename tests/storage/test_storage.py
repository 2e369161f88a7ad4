"""mio_jax.storage: paths, glob, atomic writes and the reachability probe, local and on gs://."""

import os
import time

import pytest

from storage_helpers import BUCKET, free_port
from mio_jax import storage


def test_as_path_keeps_urls_and_makes_local_paths_absolute(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert os.fspath(storage.as_path("runs/a")) == str(tmp_path / "runs" / "a")
  assert os.fspath(storage.as_path("gs://b/run1")) == "gs://b/run1"
  assert os.fspath(storage.as_path("gs://b/run1") / "checkpoints") == "gs://b/run1/checkpoints"


@pytest.mark.parametrize("where", ["local", "gs"])
def test_glob_and_atomic_writes(where, tmp_path, request):
  root = str(tmp_path) if where == "local" else request.getfixturevalue("gs_dir")
  for name in ("b/x-2.bin", "b/x-1.bin", "b/y.txt", "c/x-3.bin"):
    storage.as_path(f"{root}/{name}").parent.mkdir(parents=True, exist_ok=True)
    storage.atomic_write_bytes(f"{root}/{name}", name.encode())
  assert storage.glob(f"{root}/b/x-*.bin") == [f"{root}/b/x-1.bin", f"{root}/b/x-2.bin"]
  assert storage.glob(f"{root}/*/x-*.bin") == [f"{root}/b/x-1.bin", f"{root}/b/x-2.bin", f"{root}/c/x-3.bin"]
  assert storage.glob(f"{root}/b/none-*") == []
  storage.atomic_write_text(f"{root}/b/y.txt", "new")  # replaces
  assert storage.as_path(f"{root}/b/y.txt").read_text() == "new"
  assert sorted(p.name for p in storage.as_path(f"{root}/b").iterdir()) == ["x-1.bin", "x-2.bin", "y.txt"]


def test_local_atomic_write_leaves_no_temporary_and_the_usual_mode(tmp_path):
  path = tmp_path / "f.json"
  storage.atomic_write_text(path, "{}")
  umask = os.umask(0o022)
  os.umask(umask)
  assert os.listdir(tmp_path) == ["f.json"]
  assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask  # as open() makes it, not mkstemp's 0600


def test_failed_local_write_keeps_the_old_file(tmp_path, monkeypatch):
  path = tmp_path / "f.txt"
  storage.atomic_write_text(path, "old")

  def disk_full(*args):
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(os, "fsync", disk_full)
  with pytest.raises(OSError, match="No space"):
    storage.atomic_write_text(path, "new")
  assert path.read_text() == "old" and os.listdir(tmp_path) == ["f.txt"]  # temporary removed


def test_missing_bucket_is_one_clear_line(gs_dir):
  storage.check_reachable(gs_dir, "workdir")  # the emulator's bucket: fine
  with pytest.raises(storage.StorageError) as e:
    storage.check_reachable("gs://no-such-bucket/run", "workdir")
  assert str(e.value) == ("workdir='gs://no-such-bucket/run': bucket gs://no-such-bucket does not exist "
                          "or is not visible with these credentials")


def test_unreachable_storage_fails_fast_naming_the_path(gcs_emulator, monkeypatch):
  monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{free_port()}")  # nothing listens
  t0 = time.perf_counter()
  with pytest.raises(storage.StorageError) as e:
    storage.check_reachable(f"gs://{BUCKET}/run", "config.init_from", timeout_s=2)
  assert time.perf_counter() - t0 < 4
  msg = str(e.value)
  assert "\n" not in msg and msg.startswith(f"config.init_from='gs://{BUCKET}/run': ")
  assert "did not answer within 2 s" in msg or "cannot reach" in msg
