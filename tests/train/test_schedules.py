"""Learning-rate schedules at their key steps (values worked by hand), and a resume that would
change the schedule: one line, and the run keeps the schedule it started with."""

import json
import logging
import math

import ml_collections
import pytest
from train_helpers import eval_config, metrics_rows

from mio_jax.train.loop import train
from mio_jax.train.schedules import SCHEDULE_FILE, build_schedule, run_schedule, schedule_spec
from mio_jax.train.state import learning_rate_schedule


def opt(schedule, **kw):
  # 100 steps: warmup 10 steps to 1.0, floor 0.1, WSD decays over the last 20 steps.
  return ml_collections.ConfigDict(dict(dict(schedule=schedule, peak_lr=1.0, warmup_fraction=0.1,
                                             final_lr_fraction=0.1, decay_fraction=0.2), **kw))


@pytest.mark.parametrize("name,expected", [
    # cosine over steps 10..100: halfway (step 55) 0.1 + 0.9 * (1 + cos(pi / 2)) / 2 = 0.55
    ("warmup_cosine", {0: 0.0, 5: 0.5, 10: 1.0, 55: 0.55, 100: 0.1, 150: 0.1}),
    ("warmup_stable_decay", {0: 0.0, 5: 0.5, 10: 1.0, 50: 1.0, 80: 1.0, 90: 0.55, 100: 0.1, 150: 0.1}),
    ("constant", {0: 0.0, 5: 0.5, 10: 1.0, 55: 1.0, 100: 1.0}),
    ("linear", {0: 0.0, 5: 0.5, 10: 1.0, 55: 0.55, 100: 0.1, 150: 0.1}),
])
def test_schedule_values_at_key_steps(name, expected):
  schedule = learning_rate_schedule(opt(name), 100)
  for step, lr in expected.items():
    assert float(schedule(step)) == pytest.approx(lr, abs=1e-6), (name, step)


def test_cosine_quarter_point():
  # step 32.5 is not a step; step 28 is 0.2 of the decay: 0.1 + 0.45 * (1 + cos(0.2 pi))
  assert float(learning_rate_schedule(opt("warmup_cosine"), 100)(28)) == pytest.approx(
      0.1 + 0.45 * (1 + math.cos(0.2 * math.pi)), abs=1e-6)


def test_a_changed_schedule_on_resume_is_named_in_one_line_and_the_saved_one_kept(tmp_path, caplog):
  started = schedule_spec(opt("linear"), 100)
  assert run_schedule(str(tmp_path), started, resuming=False, write=True) == started
  assert json.loads((tmp_path / SCHEDULE_FILE).read_text())["total_steps"] == 100
  longer = schedule_spec(opt("linear"), 200)
  with caplog.at_level(logging.WARNING, logger="mio_jax.train"):
    kept = run_schedule(str(tmp_path), longer, resuming=True, write=True)
  assert kept == started
  lines = [r.getMessage() for r in caplog.records]
  assert len(lines) == 1 and "\n" not in lines[0]
  assert "linear over 200 steps" in lines[0] and "linear over 100 steps" in lines[0]
  assert "keeping the run's schedule" in lines[0]
  assert float(build_schedule(kept)(100)) == pytest.approx(0.1)  # the saved floor at the saved end


@pytest.mark.slow  # two training runs
def test_resumed_run_with_more_steps_follows_its_saved_schedule(tmp_path, caplog):
  c = eval_config(steps=4)
  c.eval.every = 0
  c.optimizer.update(schedule="linear", warmup_fraction=0.25)
  train(c, str(tmp_path), stop_at_step=2)
  c.train.steps = 6  # would stretch the decay over 6 steps
  with caplog.at_level(logging.WARNING, logger="mio_jax.train"):
    train(c, str(tmp_path))
  assert sum("keeping the run's schedule" in r.getMessage() for r in caplog.records) == 1
  lr = {r["step"]: r["learning_rate"] for r in metrics_rows(tmp_path)}
  peak, floor = c.optimizer.peak_lr, c.optimizer.peak_lr * c.optimizer.final_lr_fraction
  # The 4-step schedule: warmup 1 step, then linear from peak (step 1) to the floor (step 4),
  # held there; metrics row n shows the rate of the update at step n - 1.
  for step, expected in {2: peak, 3: peak - (peak - floor) / 3, 5: floor, 6: floor}.items():
    assert lr[step] == pytest.approx(expected, rel=1e-5), (step, lr)
