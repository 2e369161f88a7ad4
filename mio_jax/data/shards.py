"""Token shards: ArrayRecord files of template-free samples (text parts + media code arrays).

One record per sample:

    b"MIOS" | version: uint16 LE | crc32(payload): uint32 LE | payload: msgpack map

The payload holds kind, source, meta and parts; a media part's codes are
{"shape": [...], "data": raw little-endian int32 bytes}. The full format is in docs/shard_format.md.
Samples carry no template, so one tokenized corpus serves stages 1-3 (templates are applied when
sequences are built, in mio_jax.data.templates).
"""

from __future__ import annotations

import dataclasses
import struct
import zlib
from typing import Any

import msgpack
import numpy as np
from array_record.python import array_record_module

SCHEMA_VERSION = 1
KINDS = ("image_text", "speech_text", "video_text", "interleaved", "text", "conversation")
MAGIC = b"MIOS"
_HEADER = struct.Struct("<4sHI")  # magic, version, crc32 of the payload
# Media part type -> number of dimensions of its codes array.
MEDIA_NDIM = {"image": 2, "video": 3, "speech": 2}
ROLES = ("system", "user", "assistant")
# group_size:1 keeps each record in its own chunk: random access reads one record, not a group.
WRITER_OPTIONS = "group_size:1"


class ShardFormatError(ValueError):
  """A record that cannot be decoded: wrong magic or version, bad checksum, bad fields."""


@dataclasses.dataclass
class Sample:
  kind: str
  parts: list[dict]
  source: str
  meta: dict = dataclasses.field(default_factory=dict)


def _check_part(part: dict) -> None:
  kind = part.get("type")
  if kind == "text":
    if not isinstance(part.get("text"), str):
      raise ValueError(f"text part needs a str 'text', got {type(part.get('text')).__name__}")
  elif kind in MEDIA_NDIM:
    codes = np.asarray(part.get("codes"))
    if codes.ndim != MEDIA_NDIM[kind] or not np.issubdtype(codes.dtype, np.integer):
      raise ValueError(f"{kind} part needs integer codes of {MEDIA_NDIM[kind]} dims, got "
                       f"{codes.dtype} {codes.shape}")
    if kind == "speech" and codes.shape[0] != 8:
      raise ValueError(f"speech codes must hold all 8 RVQ layers [8, frames], got {codes.shape}")
  else:
    raise ValueError(f"unknown part type {kind!r}; expected text, image, video or speech")
  if "role" in part and part["role"] not in ROLES:
    raise ValueError(f"part role {part['role']!r} is not one of {ROLES}")


def encode_sample(sample: Sample) -> bytes:
  if sample.kind not in KINDS:
    raise ValueError(f"sample kind {sample.kind!r} is not one of {KINDS}")
  parts = []
  for part in sample.parts:
    _check_part(part)
    out = {k: v for k, v in part.items() if k != "codes"}
    if "codes" in part:
      codes = np.ascontiguousarray(part["codes"], dtype="<i4")
      out["codes"] = {"shape": list(codes.shape), "data": codes.tobytes()}
    parts.append(out)
  payload = msgpack.packb({"kind": sample.kind, "source": sample.source, "meta": sample.meta,
                           "parts": parts}, use_bin_type=True)
  return _HEADER.pack(MAGIC, SCHEMA_VERSION, zlib.crc32(payload)) + payload


def decode_sample(data: bytes, *, path: str, index: int) -> Sample:
  where = f"{path} record {index}"
  if len(data) < _HEADER.size:
    raise ShardFormatError(f"{where}: truncated record ({len(data)} bytes)")
  magic, version, crc = _HEADER.unpack_from(data)
  if magic != MAGIC:
    raise ShardFormatError(f"{where}: not a mio_jax shard record (magic {magic!r})")
  if version != SCHEMA_VERSION:
    raise ShardFormatError(f"{where}: shard schema version {version}, this code reads "
                           f"version {SCHEMA_VERSION}; re-tokenize or use a matching mio_jax")
  payload = memoryview(data)[_HEADER.size:]
  if zlib.crc32(payload) != crc:
    raise ShardFormatError(f"{where}: checksum mismatch (corrupt record)")
  try:
    obj = msgpack.unpackb(payload, raw=False)
    parts = []
    for part in obj["parts"]:
      if "codes" in part:
        c = part["codes"]
        part["codes"] = np.frombuffer(c["data"], dtype="<i4").reshape(c["shape"]).astype(np.int32)
      _check_part(part)
      parts.append(part)
    sample = Sample(kind=obj["kind"], parts=parts, source=obj["source"], meta=obj.get("meta", {}))
  except ShardFormatError:
    raise
  except Exception as e:  # msgpack, reshape, missing keys: all mean the same thing to the caller
    raise ShardFormatError(f"{where}: cannot decode record: {e}") from e
  if sample.kind not in KINDS:
    raise ShardFormatError(f"{where}: unknown sample kind {sample.kind!r}")
  return sample


class ShardWriter:
  """Writes samples to exactly `path` (callers handle temporary names and renames)."""

  def __init__(self, path: str):
    self.path = str(path)
    self._writer = array_record_module.ArrayRecordWriter(self.path, WRITER_OPTIONS)
    self.count = 0

  def write(self, sample: Sample) -> None:
    self._writer.write(encode_sample(sample))
    self.count += 1

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
      self._writer = None

  def __enter__(self) -> "ShardWriter":
    return self

  def __exit__(self, *exc: Any) -> None:
    self.close()


def open_reader(path: str):
  try:
    return array_record_module.ArrayRecordReader(str(path), "readahead_buffer_size:0")
  except Exception as e:
    raise ShardFormatError(f"{path}: cannot open as an ArrayRecord file: {e}") from e


def check_shard_version(reader, path: str) -> None:
  """Reads the header of record 0: ShardFormatError for another schema version or another format.

  Only the header: a record-0 payload that fails its checksum is a corrupt record, handled when it
  is read (and skipped where config says so), not a wrong file.
  """
  if reader.num_records() == 0:
    return
  data = reader.read([0])[0]
  magic, version = (_HEADER.unpack_from(data)[:2] if len(data) >= _HEADER.size else (data[:4], 0))
  if magic != MAGIC:
    raise ShardFormatError(f"{path} record 0: not a mio_jax shard record (magic {magic!r})")
  if version != SCHEMA_VERSION:
    raise ShardFormatError(f"{path} record 0: shard schema version {version}, this code reads "
                           f"version {SCHEMA_VERSION}; re-tokenize or use a matching mio_jax")


class ShardReader:
  """Random access to one shard's samples; validates the schema version on open."""

  def __init__(self, path: str):
    self.path = str(path)
    self._reader = open_reader(self.path)
    check_shard_version(self._reader, self.path)

  def __len__(self) -> int:
    return self._reader.num_records()

  def read_bytes(self, i: int) -> bytes:
    if not 0 <= i < len(self):
      raise IndexError(f"{self.path}: record {i} out of range [0, {len(self)})")
    return self._reader.read([i])[0]

  def __getitem__(self, i: int) -> Sample:
    return decode_sample(self.read_bytes(i), path=self.path, index=i)

  def close(self) -> None:
    self._reader.close()
