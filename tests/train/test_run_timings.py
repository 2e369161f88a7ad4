"""Where a run's time goes: the timing fields of metrics.jsonl, measured against a data source that
is slow on purpose, and the profiler window's trace."""

import glob
import os
import time

import pytest
from train_helpers import eval_config, metrics_rows

from mio_jax.train import loop
from mio_jax.train.loop import train

pytestmark = pytest.mark.slow  # each case trains

DATA_DELAY_S = 0.25


class SlowBatches:
  """The run's own batches, each handed over DATA_DELAY_S late."""

  def __init__(self, batches):
    self.batches = batches

  def __iter__(self):
    return self

  def __next__(self):
    time.sleep(DATA_DELAY_S)
    return next(self.batches)

  def __getattr__(self, name):  # get_state, set_state, portable_state, merge_states
    return getattr(self.batches, name)


@pytest.fixture(scope="module")
def slow_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("timed")
  real = loop.make_batches
  loop.make_batches = lambda config, sharding: SlowBatches(real(config, sharding))
  try:
    c = eval_config(steps=4)
    c.train.update(log_every=2, checkpoint_every=2, profile_steps=(2, 2))
    c.eval.update(every=2, batches=1)
    start = time.perf_counter()
    train(c, str(workdir))
    wall = time.perf_counter() - start
  finally:
    loop.make_batches = real
  return workdir, metrics_rows(workdir), wall


def test_timing_fields_are_present_and_sane(slow_run):
  _, rows, wall = slow_run
  first = rows[0]
  assert 0 < first["compile_seconds"] < wall and 0 <= first["restore_seconds"] < wall
  assert all("compile_seconds" not in r for r in rows[1:]), "once per run"
  windows = [r for r in rows if "step_seconds" in r]
  assert [r["step"] for r in windows] == [1, 2, 4]  # step 1: the evaluation ends a window
  for r in windows:
    # Every step waited DATA_DELAY_S for its batch; the step's time includes its wait.
    assert DATA_DELAY_S * 0.95 <= r["data_wait_seconds"] <= DATA_DELAY_S + 0.5, r
    assert r["data_wait_seconds"] <= r["step_seconds"] < wall, r
    assert 0 < r["goodput"] < 1, r
  # The 4 data waits are lost time: productive time is at most the wall time less them.
  assert windows[-1]["goodput"] <= 1 - 4 * DATA_DELAY_S * 0.95 / wall
  saves = {r["step"]: r["checkpoint_seconds"] for r in rows if "checkpoint_seconds" in r}
  assert sorted(saves) == [2, 4] and all(0 < s < wall for s in saves.values())
  assert all(0 < r["eval_seconds"] < wall for r in rows if "eval_loss" in r)


def test_profile_window_writes_a_trace(slow_run):
  workdir = slow_run[0]
  traces = glob.glob(os.path.join(workdir, "profile", "process_0", "plugins", "profile", "*", "*.xplane.pb"))
  assert len(traces) == 1 and os.path.getsize(traces[0]) > 0
