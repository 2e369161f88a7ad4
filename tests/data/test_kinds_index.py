"""The kinds index (SHARD.kinds): the job's equals a decode of every record; a kind-filtered source
built from it yields the records of the scan, in the scan's order, without decoding any at start;
shards without it still work (scanned, one warning per source); a wrong index fails in one line."""

import glob
import json
import logging
import os

import numpy as np
import pytest

from mio_jax.data import kinds_index, pipeline, shards
import synthetic_shards

KINDS = ("image_text", "speech_text", "video_text", "interleaved", "text", "conversation")


def _decoded_kinds(path):
  reader = shards.ShardReader(path)
  try:
    return [reader[i].kind for i in range(len(reader))]
  finally:
    reader.close()


@pytest.fixture(scope="module")
def job_output(tmp_path_factory):
  """One tokenization job over all six mini manifests (test-double encoders), shards of 5."""
  import configs.tokenize as tokenize_config
  from mio_jax.tokenize import job
  import encoder_doubles
  import tokenize_helpers as helpers
  tmp = tmp_path_factory.mktemp("kinds_job")
  inputs = helpers.subset_manifests(str(tmp / "in"), {k: 3 for k in KINDS})
  c = tokenize_config.get_config("mini")
  c.input, c.output_dir, c.shard_size, c.progress = ",".join(inputs), str(tmp / "out"), 5, False
  c.process_index, c.process_count = 0, 1
  job.run(c, encoder_doubles.use_double_encoders(c))
  return str(tmp / "out")


def test_job_kinds_index_equals_decoding_every_record(job_output):
  paths = sorted(glob.glob(os.path.join(job_output, "shards", "*.array_record")))
  with open(os.path.join(job_output, "index.json")) as f:
    index = {r["file"]: r for r in json.load(f)["shards"]}
  mixed = 0
  for path in paths:
    decoded = _decoded_kinds(path)
    codes = kinds_index.read(path, len(decoded))
    assert [shards.KINDS[c] for c in codes] == decoded, path
    counts = index[os.path.basename(path)]["kinds"]
    assert counts == {k: decoded.count(k) for k in set(decoded)}, path
    mixed += len(set(decoded)) > 1
  assert mixed >= 1 and sum(len(_decoded_kinds(p)) for p in paths) == 3 * len(KINDS)
  # Not a shard: a glob matching the index files too still reads only the shards.
  cfg = synthetic_shards.pipeline_config(job_output, "", {"text": 1}, mixed_shards="shards/*")
  assert pipeline.resolve_shards(cfg.data, "text") == paths


def _mixed_shards(root, n_shards=3, per_shard=12, *, index=True):
  rng = np.random.default_rng(0)
  order = ["image_text", "text", "speech_text", "conversation"]
  paths = []
  for f in range(n_shards):
    kinds = [order[int(k)] for k in rng.integers(0, len(order), per_shard)]
    samples = [synthetic_shards.make_sample(k, rng, uid=f * per_shard + i) for i, k in enumerate(kinds)]
    paths.append(synthetic_shards.write_samples(str(root / f"shard-{f:05d}.array_record"), samples,
                                         kinds_index=index))
  return paths


def _scan_oracle(paths, wanted):
  """(path, record, uid) of every record of a wanted kind, decoding all of them, in file order."""
  out = []
  for path in paths:
    reader = shards.ShardReader(path)
    out += [(path, i, reader[i].meta["id"]) for i in range(len(reader)) if reader[i].kind in wanted]
    reader.close()
  return out


def _yielded(source):
  return [(*where.rsplit(" record ", 1), s.meta["id"]) for where, s in
          (source[i] for i in range(len(source)))]


@pytest.mark.parametrize("wanted", [("text",), ("image_text", "conversation")])
def test_filtered_source_reads_no_record_at_start_and_yields_the_scan(tmp_path, monkeypatch, wanted):
  paths = _mixed_shards(tmp_path)
  oracle = [(p, str(i), uid) for p, i, uid in _scan_oracle(paths, wanted)]
  decodes = []
  real_decode = shards.decode_sample
  monkeypatch.setattr(shards, "decode_sample", lambda *a, **k: decodes.append(0) or real_decode(*a, **k))
  opened, real_open = [], shards.open_reader
  monkeypatch.setattr(shards, "open_reader", lambda p: opened.append(p) or real_open(p))
  counts = {}
  source = pipeline.ShardSource(paths, kinds=wanted, counts=counts)
  assert decodes == []  # start-up read the index, not the records
  assert len(source) == len(oracle) and _yielded(source) == oracle
  other = pipeline.ShardSource(paths, kinds=("speech_text",), counts=counts)
  assert opened == paths and decodes == [0] * len(oracle)  # the second source opened no shard
  assert _yielded(other) == [(p, str(i), uid) for p, i, uid in _scan_oracle(paths, ("speech_text",))]


def test_shards_without_index_are_scanned_with_one_warning(tmp_path, caplog):
  paths = _mixed_shards(tmp_path, index=False)
  kinds_index.write(paths[0], _decoded_kinds(paths[0]))  # one indexed, two older shards
  with caplog.at_level(logging.WARNING, logger="mio_jax.data"):
    source = pipeline.ShardSource(paths, kinds=("speech_text",), label="config.data.sources.x",
                                  pattern=str(tmp_path / "*.array_record"))
  warnings = [r.getMessage() for r in caplog.records]
  assert len(warnings) == 1 and warnings[0].startswith(
      "config.data.sources.x: 2 of 3 shards predate the kinds index")
  assert "python -m mio_jax.data.kinds_index" in warnings[0]
  oracle = [(p, str(i), uid) for p, i, uid in _scan_oracle(paths, ("speech_text",))]
  assert _yielded(source) == oracle
  # The regeneration command writes the index the job would have written.
  assert kinds_index.main(["kinds_index", str(tmp_path / "*")]) == 0
  for path in paths:
    assert [shards.KINDS[c] for c in kinds_index.read(path, 12)] == _decoded_kinds(path)
  caplog.clear()
  with caplog.at_level(logging.WARNING, logger="mio_jax.data"):
    assert _yielded(pipeline.ShardSource(paths, kinds=("speech_text",))) == oracle
  assert caplog.records == []


def test_index_of_another_length_fails_in_one_line(tmp_path):
  paths = _mixed_shards(tmp_path, n_shards=1)
  kinds_index.write(paths[0], ["text"] * 11)
  with pytest.raises(shards.ShardFormatError, match=(
      rf"^{paths[0]}.kinds: 11 entries for a shard of 12 records; regenerate it: "
      r"python -m mio_jax.data.kinds_index")):
    pipeline.ShardSource(paths, kinds=("text",))
  with open(kinds_index.sidecar(paths[0]), "wb") as f:
    f.write(b"\x04" * 12)  # a bare byte array, no header
  with pytest.raises(shards.ShardFormatError, match=r"\.kinds: not a version 1 kinds index"):
    pipeline.ShardSource(paths, kinds=("text",))
  assert len(pipeline.ShardSource(paths)) == 12  # unfiltered sources never read it


def test_undecodable_records_stay_in_the_filter(tmp_path):
  path = _mixed_shards(tmp_path, n_shards=1, index=False)[0]
  kinds = _decoded_kinds(path)
  kinds_index.write(path, [None if i == 3 else k for i, k in enumerate(kinds)])
  source = pipeline.ShardSource([path], kinds=("conversation",), on_corrupt="skip")
  want = sorted({3} | {i for i, k in enumerate(kinds) if k == "conversation"})
  assert [int(source[i][0].rsplit(" ", 1)[1]) for i in range(len(source))] == want
