"""The train loop on 8 CPU devices: learning, determinism, exact resume, init_from, metrics."""

import json
import os

import numpy as np
import pytest

from configs.base import stage_config
from mio_jax.train.loop import train

STEPS = 16


def small_config(steps=STEPS, **mesh):
  c = stage_config(1, "smoke")
  # A 1024-code image block (6126 ids) keeps the 16-step learning check quick and clear.
  c.vocab.image_codes = 1024
  c.model.vocab_size = 6126
  c.data.update(seq_len=32, global_batch=8)
  c.optimizer.peak_lr = 1e-2
  c.train.update(steps=steps, log_every=4, checkpoint_every=8, async_checkpointing=True)
  c.mesh.ici.update(mesh or dict(data=2, fsdp=2, tensor=2))
  return c


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
  """One uninterrupted run that several tests compare against."""
  workdir = tmp_path_factory.mktemp("full")
  return workdir, train(small_config(), str(workdir)).losses


def test_loss_falls_and_metrics_are_written(full_run):
  workdir, losses = full_run
  values = [losses[s] for s in sorted(losses)]
  assert np.mean(values[-4:]) < np.mean(values[:4]) - 0.3, values
  rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
  assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
  for key in ("loss", "loss_text", "loss_image", "loss_speech", "learning_rate", "grad_norm"):
    assert key in rows[-1], key
  assert rows[-1]["tokens_per_second"] > 0
  assert rows[-1]["mfu"] is None  # a CPU has no known peak FLOP/s: null, not a made-up number
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(workdir / "tensorboard"))
  # checkpoint_every=8 and keep 2: steps 8 and 16.
  assert sorted(os.listdir(workdir / "checkpoints"), key=int) == ["8", "16"]


@pytest.mark.slow  # a second run (~3-7 s on 2 cores); the learning run stays
def test_same_seed_gives_identical_losses(full_run, tmp_path):
  assert train(small_config(), str(tmp_path)).losses == full_run[1]


@pytest.mark.slow  # an interrupted and resumed run (~3-7 s on 2 cores); the learning run stays
def test_resume_is_bit_identical(full_run, tmp_path):
  full = full_run[1]
  first = train(small_config(), str(tmp_path), stop_at_step=8).losses
  assert first == {s: full[s] for s in range(1, 9)}
  second = train(small_config(), str(tmp_path)).losses
  assert sorted(second) == list(range(9, STEPS + 1)), "resumed from the step-8 checkpoint"
  assert second == {s: full[s] for s in range(9, STEPS + 1)}


@pytest.mark.slow  # a second run from the first's parameters (~3-7 s on 2 cores); the learning run stays
def test_init_from_loads_parameters_only(full_run, tmp_path):
  workdir, full = full_run
  c = small_config(steps=2)
  c.init_from = str(workdir)
  c.optimizer.peak_lr = 0.0  # no update: the first loss is the loaded model's
  loaded = train(c, str(tmp_path)).losses
  assert loaded[1] < full[1] - 0.3, (loaded, full[1])
  assert not os.path.exists(tmp_path / "checkpoints" / "16"), "a fresh run, not a resume"
