"""The grain pipeline: global batches, mixture, determinism, resume, host splits, bad shards, SFT."""

import json

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from configs.data import data_config, stage_weights
from mio_jax.config.keys import ConfigError
from mio_jax.data import packing, pipeline, shards
from mio_jax.data.train_iterator import make_train_iterator
from mio_jax.parallel.batch_split import BatchShard
from mio_jax.train.code_order import training_vocab
import synthetic_shards


@pytest.fixture(scope="module")
def text_model(tmp_path_factory):
  return synthetic_shards.tiny_text_model(str(tmp_path_factory.mktemp("sp")))


@pytest.fixture(scope="module")
def mixed_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("shards")
  for i, kind in enumerate(("image_text", "text", "speech_text", "conversation")):
    synthetic_shards.write_shards(str(root / kind), kind, num_samples=40, num_shards=2, seed=i)
  return str(root)


@pytest.fixture(scope="module")
def sharding():
  mesh = jax.make_mesh((4, 2), ("data", "fsdp"))
  return NamedSharding(mesh, P(("data", "fsdp")))


STAGE1 = {"image_text": 12, "text": 2, "speech_text": 2}


def _iterator(cfg, sharding):
  return make_train_iterator(cfg, batch_sharding=sharding)


def _local(batch):
  return {k: np.asarray(v) for k, v in batch.items()}


def test_global_batches(mixed_dir, text_model, sharding):
  cfg = synthetic_shards.pipeline_config(mixed_dir, text_model, STAGE1)
  it = _iterator(cfg, sharding)
  batch = next(it)
  assert set(batch) == set(pipeline.KEYS)
  for k, v in batch.items():
    assert v.shape == (8, 512) and v.sharding == sharding
    assert v.dtype == (np.float32 if k == "loss_mask" else np.int32)
  assert len(batch["inputs"].addressable_shards) == 8
  b = _local(batch)
  assert (b["segment_ids"] > 0).mean() > 0.8  # packed, not mostly padding
  json.dumps(it.get_state())  # JSON-serialisable for orbax JsonSave


def _segment_kinds(batch, vocab):
  kinds = []
  for inp, seg in zip(batch["inputs"], batch["segment_ids"]):
    for idx in packing.row_segments(seg):
      t = inp[idx]
      kinds.append("image_text" if vocab.image_start in t else
                   "speech_text" if vocab.speech_start in t else "text")
  return kinds


def test_mixture_proportions(mixed_dir, text_model, sharding):
  cfg = synthetic_shards.pipeline_config(mixed_dir, text_model, STAGE1)
  it = _iterator(cfg, sharding)
  vocab = training_vocab(cfg)
  kinds = [k for _ in range(25) for k in _segment_kinds(_local(next(it)), vocab)]
  total = len(kinds)
  assert total > 300
  for name, w in STAGE1.items():
    assert abs(kinds.count(name) / total - w / 16) < 0.03, (name, kinds.count(name), total)
    assert it.stats()[f"samples/{name}"] == kinds.count(name)  # counters agree with the tokens


def test_deterministic_and_resume(mixed_dir, text_model, sharding):
  cfg = synthetic_shards.pipeline_config(mixed_dir, text_model, STAGE1)
  it = _iterator(cfg, sharding)
  first = [_local(next(it)) for _ in range(2)]
  state = json.loads(json.dumps(it.get_state()))
  after = [_local(next(it)) for _ in range(3)]
  again = _iterator(cfg, sharding)
  for expected in first:  # same seed, same batches
    np.testing.assert_array_equal(_local(next(again))["inputs"], expected["inputs"])
  restored = _iterator(cfg, sharding)
  restored.set_state(state)
  for expected in after:
    got = _local(next(restored))
    for k in pipeline.KEYS:
      np.testing.assert_array_equal(got[k], expected[k])
  assert restored.stats() == it.stats()
  cfg.data.seed = 1
  other = _local(next(_iterator(cfg, sharding)))
  assert not np.array_equal(other["inputs"], first[0]["inputs"])


@pytest.mark.slow  # starts grain worker processes
def test_worker_processes_match_in_process_and_resume(mixed_dir, text_model, sharding):
  cfg = synthetic_shards.pipeline_config(mixed_dir, text_model, STAGE1)
  reference = _iterator(cfg, sharding)
  expected = [_local(next(reference)) for _ in range(4)]
  cfg.data.worker_count = 2
  it = _iterator(cfg, sharding)
  got = [_local(next(it)) for _ in range(2)]
  state = json.loads(json.dumps(it.get_state()))
  it.close()
  restored = _iterator(cfg, sharding)
  restored.set_state(state)
  got += [_local(next(restored)) for _ in range(2)]
  restored.close()
  for g, e in zip(got, expected):  # same batches whatever the worker count, and after a restore
    for k in pipeline.KEYS:
      np.testing.assert_array_equal(g[k], e[k])
  assert restored.stats() == reference.stats()


def _epoch_uids(cfg, block=0, blocks=1):
  vocab = training_vocab(cfg)
  shard = BatchShard(block, blocks, slice(0, cfg.data.global_batch // blocks))  # rows unused here
  examples = pipeline.build_examples(cfg.data, vocab, shard=shard, num_epochs=1)
  rows = list(packing.pack(examples.to_iter_dataset(), seq_len=cfg.data.seq_len,
                           packing_bins=4, max_segments_per_row=16))
  uids = []
  for r in rows:
    for idx in packing.row_segments(r["segment_ids"]):
      t = r["inputs"][idx]
      uids.append(int(t[int(np.flatnonzero(t == vocab.image_start)[0]) + 1] - vocab.image_base))
  return uids, sum(r["stats"] for r in rows)


def _uid_shards(root, n, num_shards=3):
  rng = np.random.default_rng(0)
  (root / "pairs").mkdir(exist_ok=True)
  samples = [synthetic_shards.uid_image_sample(u, rng) for u in range(n)]
  return [synthetic_shards.write_samples(str(root / "pairs" / f"p{s}.array_record"), samples[s::num_shards])
          for s in range(num_shards)]


def test_host_splits_disjoint_and_complete(tmp_path, text_model):
  _uid_shards(tmp_path, 50)
  cfg = synthetic_shards.pipeline_config(str(tmp_path), text_model, {"pairs": 1})
  per_host = [_epoch_uids(cfg, i, 3)[0] for i in range(3)]
  union = [u for h in per_host for u in h]
  assert sorted(union) == list(range(50))  # complete, and no uid on two hosts or twice
  assert all(15 <= len(h) <= 17 for h in per_host)
  cfg.data.global_batch = 6
  assert next(iter(pipeline.build_dataset(cfg.data, training_vocab(cfg),
                                          shard=BatchShard(1, 3, slice(2, 4)))))["inputs"].shape == (2, 512)


def test_corrupt_record_error_or_skip(tmp_path, text_model, sharding):
  paths = _uid_shards(tmp_path, 30)
  good = shards.ShardReader(paths[1])
  records = [good.read_bytes(i) for i in range(len(good))]
  bad = bytearray(records[4])
  bad[-3] ^= 0x55
  from array_record.python import array_record_module
  w = array_record_module.ArrayRecordWriter(paths[1], shards.WRITER_OPTIONS)
  for r in records[:4] + [bytes(bad)] + records[5:]:
    w.write(r)
  w.close()
  cfg = synthetic_shards.pipeline_config(str(tmp_path), text_model, {"pairs": 1})
  with pytest.raises(shards.ShardFormatError, match=rf"{paths[1]} record 4: checksum mismatch"):
    _epoch_uids(cfg)
  cfg.data.on_corrupt = "skip"
  uids, stats = _epoch_uids(cfg)
  lost = 1 + 4 * 3  # record 4 of shard p1 holds sample 13
  assert sorted(uids) == [u for u in range(30) if u != lost]
  assert stats[1 + packing.STAT_NAMES.index("skipped_corrupt")] == 1


def test_other_version_and_missing_shards(tmp_path, text_model, sharding):
  paths = _uid_shards(tmp_path, 9)
  record = shards.ShardReader(paths[2]).read_bytes(0)
  from array_record.python import array_record_module
  w = array_record_module.ArrayRecordWriter(paths[2], shards.WRITER_OPTIONS)
  w.write(record[:4] + (7).to_bytes(2, "little") + record[6:])
  w.close()
  cfg = synthetic_shards.pipeline_config(str(tmp_path), text_model, {"pairs": 1})
  with pytest.raises(shards.ShardFormatError, match=rf"{paths[2]} record 0: shard schema version 7"):
    _iterator(cfg, sharding)
  cfg = synthetic_shards.pipeline_config(str(tmp_path), text_model, {"nothing": 1})
  with pytest.raises(FileNotFoundError, match=r"config.data.sources.nothing.shards"):
    _iterator(cfg, sharding)


def test_stage4_sft_masks(mixed_dir, text_model, sharding):
  cfg = synthetic_shards.pipeline_config(mixed_dir, text_model, {"conversation": 1}, stage=4,
                                  loss_mask="assistant", template_stage=4)
  vocab = training_vocab(cfg)
  b = _local(next(_iterator(cfg, sharding)))
  for inp, tgt, seg, mask in zip(b["inputs"], b["targets"], b["segment_ids"], b["loss_mask"]):
    for idx in packing.row_segments(seg):
      m, t = mask[idx].astype(bool), tgt[idx]
      assert 0 < m.sum() < len(idx) - 1
      im_start = np.flatnonzero(inp[idx] == vocab.im_start_ids[0])
      assert len(im_start) == 5  # system, user, assistant, user, assistant
      assert not m[:im_start[2]].any()  # nothing before the first assistant turn is trained
      assert (t[m] == vocab.im_end).sum() == 2  # each assistant turn's closing <|im_end|>


def test_data_config_ratios():
  assert stage_weights(1) == {"image_text": 12, "text": 2, "interleaved": 0, "video_text": 0,
                              "speech_text": 2}
  assert stage_weights(3)["speech_text"] == 12 and stage_weights(3)["interleaved"] == 0.5
  c = data_config(4, "full")
  assert (c.seq_len, c.loss_mask, list(c.sources)) == (2800, "assistant", ["conversation"])
  c = data_config(2, "smoke")
  assert pipeline.source_names(c) == ("image_text", "interleaved", "speech_text", "text", "video_text")
  assert data_config(1, "").seq_len == 2800 and data_config(1, "40m").seq_len == 1024
  with pytest.raises(ValueError, match="stage=5"):
    data_config(5)
  with pytest.raises(ValueError, match="size='huge'"):
    data_config(1, "huge")


def test_each_epoch_is_a_new_permutation(tmp_path, text_model):
  _uid_shards(tmp_path, 20, num_shards=2)
  cfg = synthetic_shards.pipeline_config(str(tmp_path), text_model, {"pairs": 1})
  vocab = training_vocab(cfg)
  examples = pipeline.build_examples(cfg.data, vocab)  # infinite
  uids = [int(examples[i]["inputs"][np.flatnonzero(examples[i]["inputs"] == vocab.image_start)[0] + 1]
              - vocab.image_base) for i in range(60)]
  epochs = [uids[i:i + 20] for i in (0, 20, 40)]
  for e in epochs:
    assert sorted(e) == list(range(20))
  assert epochs[0] != epochs[1] != epochs[2] and epochs[0] != list(range(20))


def test_codes_outside_vocabulary_name_the_record(tmp_path, text_model, sharding):
  (tmp_path / "pairs").mkdir()
  path = synthetic_shards.write_samples(str(tmp_path / "pairs" / "x.array_record"),
                                 [synthetic_shards.uid_image_sample(9000, np.random.default_rng(0))])
  cfg = synthetic_shards.pipeline_config(str(tmp_path), text_model, {"pairs": 1})  # 8192 image codes
  with pytest.raises(ValueError, match=rf"{path} record 0: image codes outside \[0, 8192\)"):
    next(_iterator(cfg, sharding))
  cfg.vocab.text_model = ""
  with pytest.raises(ValueError, match="config.vocab.text_model is not set"):
    _iterator(cfg, sharding)


def test_mixed_kind_shards_filtered_per_source(tmp_path, text_model, sharding):
  rng = np.random.default_rng(0)
  kinds = ["image_text", "text", "speech_text"] * 20
  (tmp_path / "job" / "shards").mkdir(parents=True)
  synthetic_shards.write_samples(str(tmp_path / "job" / "shards" / "shard-00000-of-00001.array_record"),
                          [synthetic_shards.make_sample(k, rng, uid=i) for i, k in enumerate(kinds)])
  cfg = synthetic_shards.pipeline_config(str(tmp_path), text_model, {"image_text": 2, "text": 1,
                                                              "speech_text": 1})
  cfg.data.mixed_shards = "job/shards/*.array_record"
  it = _iterator(cfg, sharding)
  vocab = training_vocab(cfg)
  got = [k for _ in range(6) for k in _segment_kinds(_local(next(it)), vocab)]
  for name, share in (("image_text", 0.5), ("text", 0.25), ("speech_text", 0.25)):
    assert abs(got.count(name) / len(got) - share) < 0.06
    assert it.stats()[f"samples/{name}"] == got.count(name)
  cfg.data.mixed_shards = ""  # the same selection by hand: each source's shards and kinds
  for name in cfg.data.sources:
    cfg.data.sources[name].update(shards="job/shards/*.array_record", kinds=name)
  again = _iterator(cfg, sharding)
  assert [k for _ in range(6) for k in _segment_kinds(_local(next(again)), vocab)] == got
  cfg.data.sources.text.kinds = "txt"
  with pytest.raises(ValueError, match=r"config.data.sources.text.kinds: unknown kinds \['txt'\]"):
    _iterator(cfg, sharding)


def test_mixed_shards_selection_and_its_errors(tmp_path, text_model):
  import ml_collections
  from mio_jax.data.config import shards_if_mixed, source_shards
  cfg = synthetic_shards.pipeline_config(str(tmp_path), text_model, {"text": 1, "pairs": 0},
                                  mixed_shards="job/*.array_record")
  assert source_shards(cfg.data, "text") == ("job/*.array_record", ("text",))
  with pytest.raises(ValueError, match=r"^config.data.mixed_shards is set but source 'pairs' is not "
                     r"a sample kind \(image_text, "):
    source_shards(cfg.data, "pairs")
  with pytest.raises(FileNotFoundError, match=rf"^config.data.mixed_shards='job/\*.array_record': "
                     rf"no files match {tmp_path}/job/\*.array_record$"):
    pipeline.resolve_shards(cfg.data, "text")
  for mixed, source, want in (("g", "synthetic", "shards"), ("", "synthetic", "synthetic"),
                              ("g", "shards", "shards")):
    c = ml_collections.ConfigDict({"data": {"mixed_shards": mixed, "source": source}})
    shards_if_mixed(c)
    assert c.data.source == want


def test_minimal_data_config_is_refused_not_filled_with_mios_mixture(tmp_path, text_model, sharding):
  """config.data names every key: a minimal one fails on the first missing key (it used to get
  MIO's sources and weights for its stage without a word)."""
  import ml_collections
  full = synthetic_shards.pipeline_config(str(tmp_path), text_model, {"pairs": 1})
  cfg = ml_collections.ConfigDict({"stage": 3, "vocab": full.vocab.to_dict(), "data": {
      "source": "shards", "seq_len": 256, "global_batch": 8, "seed": 0, "data_dir": str(tmp_path)}})
  _uid_shards(tmp_path, 12)
  with pytest.raises(ConfigError, match=r"^config.data.sources is missing$"):
    _iterator(cfg, sharding)
  cfg.data.sources = {"pairs": {"shards": "pairs/*.array_record", "weight": 1.0}}
  with pytest.raises(ConfigError, match=r"^config.data.sources.pairs.kinds is missing$"):
    _iterator(cfg, sharding)
  cfg.data.sources.pairs.kinds = ""
  with pytest.raises(ConfigError, match=r"^config.data.mixed_shards is missing$"):
    _iterator(cfg, sharding)
  full.data.update(sources=cfg.data.sources, seq_len=256)  # the preset, overridden, works
  batch = next(_iterator(full, sharding))
  assert batch["inputs"].shape == (8, 256)
