"""End to end: the tokenization job's shards of the mini corpus -> stage 2 and stage 4 batches.

Uses the job's code-from-signal test doubles as encoders (no tokenizer weights), the committed
data/vocab/mini.model and the smoke vocabulary (1000 text pieces, 1024 image codes).
"""

import os

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from configs.base import stage_config
from mio_jax.data import packing
from mio_jax.data.train_iterator import make_train_iterator
from mio_jax.train.code_order import training_vocab

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


@pytest.fixture(scope="module")
def mini_shards(tmp_path_factory):
  from tokenize_helpers import tokenize_mini_subset
  tmp = tmp_path_factory.mktemp("tok")
  tokenize_mini_subset(str(tmp / "in"), str(tmp / "out"), per_kind=6, shard_size=8)
  return str(tmp / "out" / "shards" / "*.array_record")


def _config(stage, shards_glob):
  cfg = stage_config(stage, "smoke")
  cfg.vocab.update(text_model=os.path.join(ROOT, "data", "vocab", "mini.model"), image_codes=1024)
  cfg.data.seq_len = 1536  # a 4-frame 16x16 video is 4 x 258 tokens
  cfg.data.update(source="shards", mixed_shards=shards_glob)
  return cfg


@pytest.mark.parametrize("stage", [2, 4])
def test_stage_batches_from_job_shards(mini_shards, stage):
  cfg = _config(stage, mini_shards)
  vocab = training_vocab(cfg)
  sharding = NamedSharding(jax.make_mesh((8,), ("data",)), P("data"))
  it = make_train_iterator(cfg, batch_sharding=sharding)
  b = {k: np.asarray(v) for k, v in next(it).items()}
  assert b["inputs"].shape == (8, 1536) and b["inputs"].max() < vocab.size
  for inp, seg, mask in zip(b["inputs"], b["segment_ids"], b["loss_mask"]):
    for idx in packing.row_segments(seg):
      tokens = inp[idx]
      assert tokens[0] == vocab.bos
      if stage == 4:
        assert (tokens == vocab.im_start).sum() >= 3 and 0 < mask[idx].sum() < len(idx) - 1
  stats = it.stats()
  assert stats["dropped_overlong"] == 0 and stats["skipped_corrupt"] == 0
  if stage == 2:
    assert all(stats[f"samples/{k}"] > 0 for k in ("image_text", "speech_text", "video_text",
                                                   "interleaved", "text"))
