"""Shard format: round trip of every part form, version and corruption errors naming file and record."""

import struct

import numpy as np
import pytest
from array_record.python import array_record_module

from mio_jax.data import shards
from mio_jax.data.shards import Sample, ShardFormatError, ShardReader, ShardWriter
import synthetic_shards


def _assert_same(a: Sample, b: Sample):
  assert (a.kind, a.source, a.meta) == (b.kind, b.source, b.meta)
  assert len(a.parts) == len(b.parts)
  for pa, pb in zip(a.parts, b.parts):
    assert set(pa) == set(pb)
    for key in pa:
      if key == "codes":
        assert pb["codes"].dtype == np.int32
        np.testing.assert_array_equal(pa["codes"], pb["codes"])
      else:
        assert pa[key] == pb[key]


def test_round_trip_all_kinds(tmp_path):
  rng = np.random.default_rng(0)
  samples = [synthetic_shards.make_sample(k, rng, uid=i) for i, k in enumerate(shards.KINDS)]
  samples[0].meta.update({"caption_source": "SBU", "score": 0.5})
  path = str(tmp_path / "a.array_record")
  with ShardWriter(path) as w:
    for s in samples:
      w.write(s)
  r = ShardReader(path)
  assert len(r) == len(samples)
  for i in reversed(range(len(samples))):  # random access, any order
    _assert_same(samples[i], r[i])
  assert r[5].parts[-1]["role"] == "assistant" and r[5].parts[-1]["codes"].shape[0] == 8


def test_writer_rejects_bad_samples(tmp_path):
  with ShardWriter(str(tmp_path / "b.array_record")) as w:
    with pytest.raises(ValueError, match="kind 'audio'"):
      w.write(Sample("audio", [], "x"))
    with pytest.raises(ValueError, match="all 8 RVQ layers"):
      w.write(Sample("speech_text", [{"type": "speech", "codes": np.zeros((4, 9), np.int32)}], "x"))
    with pytest.raises(ValueError, match="integer codes of 2 dims"):
      w.write(Sample("image_text", [{"type": "image", "codes": np.zeros((2, 2, 2), int)}], "x"))


def _write_raw(path, records):
  w = array_record_module.ArrayRecordWriter(str(path), shards.WRITER_OPTIONS)
  for r in records:
    w.write(r)
  w.close()


def _with_version(record: bytes, version: int) -> bytes:
  magic, _, crc = struct.unpack_from("<4sHI", record)
  return struct.pack("<4sHI", magic, version, crc) + record[10:]


def test_other_version_fails_on_open(tmp_path):
  good = shards.encode_sample(synthetic_shards.make_sample("text", np.random.default_rng(0), uid=0))
  path = tmp_path / "v2.array_record"
  _write_raw(path, [_with_version(good, 2), good])
  with pytest.raises(ShardFormatError, match=rf"{path} record 0: shard schema version 2, this code "
                     r"reads version 1"):
    ShardReader(str(path))


def test_corrupt_record_names_file_and_record(tmp_path):
  rng = np.random.default_rng(0)
  records = [shards.encode_sample(synthetic_shards.make_sample("image_text", rng, uid=i)) for i in range(3)]
  bad = bytearray(records[2])
  bad[-5] ^= 0xFF
  path = tmp_path / "c.array_record"
  _write_raw(path, records[:2] + [bytes(bad)])
  r = ShardReader(str(path))  # record 0 is fine, so opening works
  assert r[1].meta == {"id": 1}
  with pytest.raises(ShardFormatError, match=rf"^{path} record 2: checksum mismatch"):
    r[2]
  for data, msg in [(b"MIO", "truncated record"), (b"XXXX" + records[0][4:], "not a mio_jax shard"),
                    (records[0][:10] + b"\x01", "checksum mismatch")]:
    with pytest.raises(ShardFormatError, match=rf"^f.ar record 7: {msg}"):
      shards.decode_sample(data, path="f.ar", index=7)


def test_undecodable_payload_with_valid_checksum():
  import zlib
  payload = b"\x93\x01\x02"  # valid msgpack, but a list, not the sample map
  data = struct.pack("<4sHI", b"MIOS", 1, zlib.crc32(payload)) + payload
  with pytest.raises(ShardFormatError, match=r"^s.ar record 3: cannot decode record"):
    shards.decode_sample(data, path="s.ar", index=3)


def test_corrupt_first_record_is_a_record_error_not_a_file_error(tmp_path):
  rng = np.random.default_rng(0)
  records = [shards.encode_sample(synthetic_shards.make_sample("text", rng, uid=i)) for i in range(2)]
  path = tmp_path / "d.array_record"
  _write_raw(path, [records[0][:-1] + bytes([records[0][-1] ^ 1]), records[1]])
  r = ShardReader(str(path))  # the header is fine: the file opens, record 0 fails when read
  with pytest.raises(ShardFormatError, match=rf"^{path} record 0: checksum mismatch"):
    r[0]
  assert r[1].meta == {"id": 1}
  _write_raw(path, [b"PK\x03\x04 some other format"])
  with pytest.raises(ShardFormatError, match=rf"^{path} record 0: not a mio_jax shard"):
    ShardReader(str(path))
