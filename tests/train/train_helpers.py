"""Configs for the train-loop tests on real token shards (the `mini_shards` fixture, conftest.py)."""

import json
import os

from configs.base import stage_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def shard_config_overrides(shards_glob: str) -> dict[str, object]:
  """`--config.KEY=VALUE` pairs that train on one tokenization job's mixed-kind shards."""
  return {"data.mixed_shards": shards_glob}


def smoke_on_shards(shards_glob: str, stage: int = 1, **train):
  """The stage's smoke config on the shards: short rows, a small batch, quick steps."""
  c = stage_config(stage, "smoke")
  c.data.mixed_shards = shards_glob
  c.data.update(seq_len=256, global_batch=8)
  c.train.update(log_every=1, checkpoint_every=4, keep_checkpoints=3, async_checkpointing=False)
  c.train.update(train)
  return c


def eval_config(steps=8):
  """A quick synthetic run on 8 devices with held-out evaluation every 4 steps."""
  c = stage_config(1, "smoke")
  c.vocab.image_codes = 1024  # 6126 ids: quick steps
  c.model.vocab_size = 6126
  c.data.update(seq_len=32, global_batch=8)
  c.optimizer.peak_lr = 1e-2
  c.train.update(steps=steps, log_every=2, checkpoint_every=4, async_checkpointing=False)
  c.eval.update(every=4, batches=2, seed=3)
  c.mesh.ici.update(data=2, fsdp=2, tensor=2)
  return c


def cli_flags(overrides: dict[str, object]) -> list[str]:
  return [f"--config.{k}={v}" for k, v in overrides.items()]


def metrics_rows(workdir) -> list[dict]:
  """metrics.jsonl's complete rows (none yet: []; a line still being written is left out)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.endswith("\n")]
