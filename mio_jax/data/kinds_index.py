"""The kinds index: a `<shard>.kinds` file beside a shard giving each record's kind in one byte.

    b"MIOK" | version: uint32 LE | one uint8 per record: index into shards.KINDS (255: undecodable)

The pipeline filters mixed-kind shards by kind (config.data.sources.<name>.kinds) from these bytes,
without decoding any record: start-up reads one small file per shard instead of every record.
The tokenization job writes it with the shard; `python -m mio_jax.data.kinds_index 'GLOB'` writes
it for shards that predate it (one decode of every record, once).
"""

from __future__ import annotations

import struct
import sys

import numpy as np

from mio_jax import storage
from mio_jax.data import shards

SUFFIX = ".kinds"
MAGIC = b"MIOK"
VERSION = 1
UNDECODABLE = 255  # a record the regeneration could not decode: kept by every filter, fails on read
_HEADER = struct.Struct("<4sI")
assert len(shards.KINDS) < UNDECODABLE


def sidecar(path: str) -> str:
  return str(path) + SUFFIX


def encode(kinds) -> bytes:
  """Kind names (None: undecodable) -> the file's bytes."""
  codes = bytes(UNDECODABLE if k is None else shards.KINDS.index(k) for k in kinds)
  return _HEADER.pack(MAGIC, VERSION) + codes


def write(path: str, kinds) -> str:
  """Writes `path`.kinds atomically (a reader never sees half; local or gs://)."""
  out = sidecar(path)
  storage.atomic_write_bytes(out, encode(kinds))
  return out


def read(path: str, num_records: int) -> np.ndarray | None:
  """The shard's per-record kind codes (uint8), or None when it has no kinds index."""
  name = sidecar(path)
  try:
    data = storage.as_path(name).read_bytes()
  except FileNotFoundError:
    return None
  magic, version = _HEADER.unpack_from(data) if len(data) >= _HEADER.size else (data[:4], 0)
  if magic != MAGIC or version != VERSION:
    raise shards.ShardFormatError(f"{name}: not a version {VERSION} kinds index (magic {magic!r}, "
                                  f"version {version}); regenerate it: python -m "
                                  f"mio_jax.data.kinds_index '{path}'")
  codes = np.frombuffer(data, np.uint8, offset=_HEADER.size)
  if len(codes) != num_records:
    raise shards.ShardFormatError(f"{name}: {len(codes)} entries for a shard of {num_records} "
                                  f"records; regenerate it: python -m mio_jax.data.kinds_index '{path}'")
  return codes


def codes_of(kinds) -> np.ndarray:
  """Kind names -> the codes a filter keeps (the wanted kinds, and undecodable records)."""
  return np.asarray([shards.KINDS.index(k) for k in kinds] + [UNDECODABLE], np.uint8)


def scan(path: str) -> list[str | None]:
  """Every record's kind by decoding it (None: undecodable): the slow path the index replaces."""
  reader = shards.open_reader(path)
  try:
    out = []
    for i in range(reader.num_records()):
      try:
        out.append(shards.decode_sample(reader.read([i])[0], path=path, index=i).kind)
      except shards.ShardFormatError:
        out.append(None)
    return out
  finally:
    reader.close()


def main(argv: list[str]) -> int:
  import glob
  if len(argv) < 2:
    print("usage: python -m mio_jax.data.kinds_index 'SHARD_GLOB' ...  (writes SHARD.kinds for each)")
    return 2
  paths = sorted(p for pattern in argv[1:] for p in glob.glob(pattern) if not p.endswith(SUFFIX))
  if not paths:
    print(f"no shards match {' '.join(argv[1:])}")
    return 1
  for path in paths:
    kinds = scan(path)
    write(path, kinds)
    print(f"{sidecar(path)}: {len(kinds)} records"
          + (f", {kinds.count(None)} undecodable" if None in kinds else ""))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
