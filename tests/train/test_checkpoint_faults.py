"""A damaged newest checkpoint: the run resumes from the newest step that restores, exactly as an
uninterrupted run would continue from there; milestones survive keep-N; metrics have one row a step."""

import os
import shutil

import pytest

from configs.base import stage_config
from mio_jax.train.checkpoint import CheckpointError
from mio_jax.train.loop import train
from train_helpers import metrics_rows, smoke_on_shards

# Every case trains (a reference and a stopped run, ~30 s on 2 cores); the resume path itself is in
# tests/train/test_train_loop.py's default run.
pytestmark = pytest.mark.slow

STEPS = 12


def _config(shards, **train_kw):
  return smoke_on_shards(shards, steps=STEPS, checkpoint_every=4, **train_kw)


@pytest.fixture(scope="module")
def runs(mini_shards, tmp_path_factory):
  """(the uninterrupted run's losses, a workdir stopped at step 8 with checkpoints 4 and 8)."""
  reference = train(_config(mini_shards), str(tmp_path_factory.mktemp("reference"))).losses
  stopped = tmp_path_factory.mktemp("stopped")
  assert sorted(train(_config(mini_shards), str(stopped), stop_at_step=8).losses) == list(range(1, 9))
  return reference, stopped


def _files(step_dir, item):
  return [os.path.join(root, f) for root, _, files in os.walk(os.path.join(step_dir, item))
          for f in files if os.sep + "d" + os.sep in os.path.join(root, f) + os.sep
          and "ocdbt" in root]


def _delete_arrays(step_dir):
  for f in _files(step_dir, "params"):
    os.remove(f)


def _truncate_arrays(step_dir):
  for f in _files(step_dir, "opt_state"):
    with open(f, "r+b") as fh:
      fh.truncate(os.path.getsize(f) // 2)


def _break_metadata(step_dir):
  with open(os.path.join(step_dir, "params", "_METADATA"), "w") as f:
    f.write('{"tree_metadata": ')


def _drop_item(step_dir):  # what a crash between two items' writes leaves on a non-atomic store
  shutil.rmtree(os.path.join(step_dir, "opt_state"))


def _drop_data_state(step_dir):
  os.remove(os.path.join(step_dir, "data", "process_0-of-1.json"))


@pytest.mark.parametrize("damage", [_delete_arrays, _break_metadata, _truncate_arrays, _drop_item,
                                    _drop_data_state], ids=lambda f: f.__name__.strip("_"))
def test_damaged_newest_step_falls_back_to_the_previous_one(runs, mini_shards, tmp_path, damage,
                                                            caplog):
  reference, stopped = runs
  workdir = tmp_path / "run"
  shutil.copytree(stopped, workdir)
  damage(str(workdir / "checkpoints" / "8"))
  os.makedirs(workdir / "checkpoints" / "12.orbax-checkpoint-tmp-1733000000")  # a crashed save
  with caplog.at_level("WARNING", logger="mio_jax.train"):
    resumed = train(_config(mini_shards), str(workdir)).losses
  assert sorted(resumed) == list(range(5, STEPS + 1)), "resumed from step 4"
  assert resumed == {s: reference[s] for s in resumed}
  assert any("checkpoint step 8 cannot be restored" in r.message for r in caplog.records)
  rows = metrics_rows(workdir)
  assert [r["step"] for r in rows] == list(range(1, STEPS + 1)), "replayed steps 5-8 written once"
  assert {r["step"]: r["loss"] for r in rows} == reference


def test_no_restorable_step_stops_in_one_line(runs, mini_shards, tmp_path):
  _, stopped = runs
  workdir = tmp_path / "run"
  shutil.copytree(stopped, workdir)
  for step in ("4", "8"):
    _break_metadata(str(workdir / "checkpoints" / step))
  with pytest.raises(CheckpointError, match=r"no checkpoint restores \(step 8: .*; step 4: ") as e:
    train(_config(mini_shards), str(workdir))
  assert "\n" not in str(e.value)


def test_a_different_process_count_is_refused_in_one_line(runs, mini_shards, tmp_path):
  _, stopped = runs
  workdir = tmp_path / "run"
  shutil.copytree(stopped, workdir)
  data = workdir / "checkpoints" / "8" / "data"
  os.rename(data / "process_0-of-1.json", data / "process_0-of-2.json")
  with pytest.raises(CheckpointError, match="written by 2 processes and this job has 1"):
    train(_config(mini_shards), str(workdir))


def test_keep_period_keeps_milestones_beside_the_newest(tmp_path):
  c = stage_config(1, "smoke")
  c.data.update(seq_len=32, global_batch=8)
  c.train.update(steps=12, log_every=4, checkpoint_every=2, keep_checkpoints=2, keep_period=4,
                 async_checkpointing=False)
  train(c, str(tmp_path))
  kept = sorted(int(d) for d in os.listdir(tmp_path / "checkpoints"))
  assert kept == [4, 8, 10, 12]  # every 4th forever, plus the newest 2
