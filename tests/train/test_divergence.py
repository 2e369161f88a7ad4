"""Non-finite steps: "halt" stops at the first one and saves nothing of it; "skip" leaves the state
unchanged for that step, counts it, and halts after max_consecutive_skips in a row."""

import os

import jax
import numpy as np
import pytest

from configs.base import stage_config
from mio_jax.train import loop
from mio_jax.train.checkpoint import load_params
from mio_jax.train.divergence import TrainingHalted
from train_helpers import metrics_rows

pytestmark = pytest.mark.slow  # each case trains a poisoned run


def _config(**train_kw):
  c = stage_config(1, "smoke")
  c.data.update(seq_len=32, global_batch=8)
  c.train.update(steps=8, log_every=4, checkpoint_every=2, keep_checkpoints=8,
                 async_checkpointing=False)
  c.train.update(train_kw)
  return c


def _saved_steps(workdir):
  return sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")))


def test_halt_on_a_diverging_run(tmp_path):
  c = _config()
  c.optimizer.update(peak_lr=1e20, warmup_fraction=0.0)  # overflows float32 within a few steps
  with pytest.raises(TrainingHalted, match=r"^step (\d+): loss nan") as e:
    loop.train(c, str(tmp_path))
  bad = int(e.value.args[0].split()[1].rstrip(":"))
  rows = metrics_rows(tmp_path)
  assert rows[-1]["step"] == bad and rows[-1]["loss"] == "nan", "the bad step is visible"
  assert all(isinstance(r["loss"], float) for r in rows[:-1])
  assert _saved_steps(tmp_path) == [s for s in range(2, bad, 2)], "nothing saved from the bad step on"


class _Poisoned:
  """The real batches, with loss_mask made NaN at the given (1-based) steps."""

  def __init__(self, batches, steps):
    self.batches, self.steps, self.n = batches, set(steps), 0

  def __iter__(self):
    return self

  def __next__(self):
    batch = next(self.batches)
    self.n += 1
    if self.n in self.steps:
      batch = dict(batch, loss_mask=batch["loss_mask"] * np.float32("nan"))
    return batch

  def __getattr__(self, name):  # get_state, set_state, state_is_global
    return getattr(self.batches, name)


def _poison(monkeypatch, steps):
  real = loop.make_batches
  monkeypatch.setattr(loop, "make_batches", lambda *a, **k: _Poisoned(real(*a, **k), steps))


def _params(workdir, step):
  c = _config()
  from mio_jax.model.transformer import ModelConfig
  from mio_jax.train.state import init_params
  abstract = jax.eval_shape(lambda: init_params(ModelConfig.from_config(c.model), 0))
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return load_params(os.path.join(workdir, "checkpoints", str(step)), abstract,
                     jax.tree.map(lambda _: sharding, abstract))


def test_skip_leaves_the_state_of_a_poisoned_step_unchanged(tmp_path, monkeypatch):
  _poison(monkeypatch, {4})
  result = loop.train(_config(on_nonfinite="skip", checkpoint_every=1), str(tmp_path))
  assert result.final_step == 8
  rows = {r["step"]: r for r in metrics_rows(tmp_path)}
  assert rows[4]["loss"] == "nan" and rows[4]["skipped"] == 1
  assert sum(r["skipped"] for r in rows.values()) == 1
  assert all(isinstance(rows[s]["loss"], float) for s in rows if s != 4)
  before, skipped, after = (_params(tmp_path, s) for s in (3, 4, 5))
  for a, b, c in zip(jax.tree.leaves(before), jax.tree.leaves(skipped), jax.tree.leaves(after)):
    np.testing.assert_array_equal(a, b)  # bit for bit: the update was not applied
  assert any(not np.array_equal(b, c) for b, c in zip(jax.tree.leaves(skipped), jax.tree.leaves(after)))


def test_skip_halts_after_max_consecutive_skips(tmp_path, monkeypatch):
  _poison(monkeypatch, {3, 4, 5})
  with pytest.raises(TrainingHalted, match=r"^step 5: 3 non-finite steps in a row"):
    loop.train(_config(on_nonfinite="skip", max_consecutive_skips=3), str(tmp_path))
  assert _saved_steps(tmp_path) == [2, 4], "skipped steps leave a good state; step 5 is not saved"
