"""SIGTERM mid-run: the CLI finishes the step, saves exactly it, exits 0; the rerun resumes there
and the whole loss trajectory equals an uninterrupted run's, bit for bit (one process, 8 devices)."""

import os
import signal
import subprocess
import sys
import time

import pytest

from mio_jax.train.loop import train
from train_helpers import ROOT, cli_flags, metrics_rows, shard_config_overrides, smoke_on_shards

STEPS, EVERY = 16, 8


def _overrides(shards):
  return {**shard_config_overrides(shards), "data.seq_len": 256, "data.global_batch": 8,
          "train.steps": STEPS, "train.checkpoint_every": EVERY, "train.log_every": 1}


def _cli(workdir, shards):
  env = dict(os.environ, JAX_PLATFORMS="cpu")  # XLA_FLAGS from conftest: 8 devices
  return subprocess.Popen(
      [sys.executable, os.path.join(ROOT, "launch", "train.py"), "--config=configs/stage1.py:smoke",
       f"--workdir={workdir}", *cli_flags(_overrides(shards))],
      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow  # three training subprocesses
def test_sigterm_saves_that_step_and_the_rerun_continues_bit_identically(mini_shards, tmp_path):
  reference = train(smoke_on_shards(mini_shards, steps=STEPS, checkpoint_every=EVERY),
                    str(tmp_path / "reference")).losses

  workdir = str(tmp_path / "run")
  proc = _cli(workdir, mini_shards)
  deadline = time.time() + 240
  while time.time() < deadline and proc.poll() is None:
    steps = [r["step"] for r in metrics_rows(workdir)]
    if steps and steps[-1] >= 3 and steps[-1] % EVERY:
      proc.send_signal(signal.SIGTERM)
      break
    time.sleep(0.05)
  else:
    proc.kill()
    pytest.fail(f"no step to interrupt: {proc.communicate()[0][-3000:]}")
  out = proc.communicate(timeout=240)[0]
  assert proc.returncode == 0, out[-3000:]
  saved = sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())
  stopped = metrics_rows(workdir)[-1]["step"]
  assert saved[-1] == stopped and stopped % EVERY and stopped < STEPS, (saved, stopped)
  assert f"preempted at step {stopped}, saved" in out

  rerun = _cli(workdir, mini_shards)
  out = rerun.communicate(timeout=300)[0]
  assert rerun.returncode == 0, out[-3000:]
  rows = metrics_rows(workdir)
  assert [r["step"] for r in rows] == list(range(1, STEPS + 1)), "one row per step after the resume"
  assert {r["step"]: r["loss"] for r in rows} == reference
