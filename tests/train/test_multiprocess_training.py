"""The README's train command as one job of 2 real processes x 4 CPU devices (127.0.0.1,
jax.distributed from JAX_* variables), on real token shards of the mini corpus.

- Its losses equal those of 1 process x 8 devices on the same global batch (data.streams=2 makes
  the batches independent of the process count), and so do its held-out eval losses and pairing
  margins (every process runs the eval step on its rows; process 0 writes).
- SIGKILL to every process mid-run, then the same command again: each host resumes at its own data
  position (its batch log continues exactly where the uninterrupted run's would), and the loss
  trajectory equals the uninterrupted run's.
- A checkpoint of the 1-process run resumes under 2 processes at the right data position.
- SIGTERM to every process (a pod's preemption notice): jax's preemption sync point picks one step,
  every process saves it and exits 0; the rerun completes the same trajectory.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from multiprocess_helpers import ROOT, free_port, process_env

from mio_jax.train.loop import train
from train_helpers import cli_flags, metrics_rows, smoke_on_shards

STEPS, EVERY = 8, 4
DRIVER = os.path.join(ROOT, "tests", "train", "logged_train.py")


def _overrides(shards):
  return {"data.mixed_shards": shards, "data.seq_len": 256, "data.global_batch": 8,
          "data.streams": 2, "train.steps": STEPS, "train.checkpoint_every": EVERY,
          "train.log_every": 1, "mesh.ici.data": 2, "mesh.ici.fsdp": -1, "mesh.ici.tensor": 1,
          "eval.mixed_shards": shards, "eval.every": EVERY, "eval.batches": 1, "eval.pairing_samples": 2}


def _launch(workdir, shards, tag, num_processes=2):
  port = free_port()
  procs = []
  for i in range(num_processes):
    env = process_env(i, num_processes, 8 // num_processes, port, {"BATCH_LOG_TAG": tag})
    procs.append(subprocess.Popen(
        [sys.executable, DRIVER, "--config=configs/stage1.py:smoke", f"--workdir={workdir}",
         *cli_flags(_overrides(shards))],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
  return procs


def _finish(procs, timeout=300):
  deadline = time.time() + timeout
  outs = []
  for p in procs:
    try:
      outs.append(p.communicate(timeout=max(1, deadline - time.time()))[0])
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      pytest.fail(f"a process ran past {timeout}s: {p.communicate()[0][-2000:]}")
  return [p.returncode for p in procs], outs


def _losses(workdir):
  return {r["step"]: r["loss"] for r in metrics_rows(workdir)}


def _batch_log(workdir, tag, process):
  with open(os.path.join(workdir, f"batches.{tag}.process_{process}.jsonl")) as f:
    return [json.loads(line) for line in f]


def _signal_when(procs, workdir, ready, sig, timeout=240):
  deadline = time.time() + timeout
  while time.time() < deadline and all(p.poll() is None for p in procs):
    rows = metrics_rows(workdir)
    if rows and ready(rows[-1]["step"]):
      for p in procs:
        p.send_signal(sig)
      return rows[-1]["step"]
    time.sleep(0.05)
  for p in procs:
    p.kill()
  pytest.fail("the run ended before it could be signalled: "
              + "".join(p.communicate()[0][-1500:] for p in procs))


@pytest.fixture(scope="module")
def reference(mini_shards, tmp_path_factory):
  """The uninterrupted 2-process run: its workdir (losses, each process's batch log)."""
  workdir = str(tmp_path_factory.mktemp("two_processes"))
  codes, outs = _finish(_launch(workdir, mini_shards, "reference"))
  assert codes == [0, 0], outs[0][-3000:] + outs[1][-3000:]
  assert sorted(_losses(workdir)) == list(range(1, STEPS + 1))
  return workdir


def _one_process_config(shards):
  c = smoke_on_shards(shards, steps=STEPS, checkpoint_every=EVERY)
  c.data.streams = 2
  c.mesh.ici.update(data=2, fsdp=-1, tensor=1)
  c.eval.update(mixed_shards=shards, every=EVERY, batches=1, pairing_samples=2)
  return c


def _stream_states(workdir, step):
  data = os.path.join(workdir, "checkpoints", str(step), "data")
  states = {}
  for name in (n for n in os.listdir(data) if n.startswith("process_")):
    with open(os.path.join(data, name)) as f:
      states.update(json.load(f)["iterator"]["stream_states"])
  return states


@pytest.mark.slow  # two 2-process trainings; the one-line config check stays
def test_two_processes_train_as_one_process_with_all_devices(reference, mini_shards, tmp_path):
  one = train(_one_process_config(mini_shards), str(tmp_path)).losses
  two = _losses(reference)
  assert sorted(two) == sorted(one)
  # The same samples, in the same rows: every row stream ends at the same position, same counts.
  assert _stream_states(reference, STEPS) == _stream_states(tmp_path, STEPS)
  # Not bit-identical: the loss and gradient sums cross the two processes through gloo's all-reduce,
  # which adds in another order than XLA's in-process one. Step 1 (same weights, same batch)
  # differs by at most an ulp or two, and 8 updates later the gap has not grown.
  worst = max(abs(two[s] - one[s]) / abs(one[s]) for s in one)
  print(f"max relative loss difference, 2 processes vs 1: {worst:.3g}")
  assert abs(two[1] - one[1]) <= 2 * np.spacing(np.float32(one[1]))
  assert worst < 1e-6
  # Every process ran the eval step on its rows of the same held-out batches (streams again).
  evals = [{r["step"]: (r["eval_loss"], r["eval_pairing_margin_speech_text"])
            for r in metrics_rows(w) if "eval_loss" in r} for w in (reference, tmp_path)]
  assert sorted(evals[0]) == sorted(evals[1]) == [1, EVERY, STEPS]
  for step, (loss, margin) in evals[0].items():
    assert loss == pytest.approx(evals[1][step][0], rel=1e-5)
    assert margin == pytest.approx(evals[1][step][1], abs=1e-4)


@pytest.mark.slow  # several 2-process launches
def test_sigkill_every_process_then_relaunch_resumes_each_host_where_it_was(reference, mini_shards,
                                                                            tmp_path):
  workdir = str(tmp_path)
  procs = _launch(workdir, mini_shards, "killed")
  _signal_when(procs, workdir, lambda step: step >= EVERY + 2, signal.SIGKILL)
  _finish(procs)
  codes, outs = _finish(_launch(workdir, mini_shards, "resumed"))
  assert codes == [0, 0], outs[0][-3000:]
  assert _losses(workdir) == _losses(reference)
  assert [r["step"] for r in metrics_rows(workdir)] == list(range(1, STEPS + 1)), "one row per step"
  resumed_from = STEPS - len(_batch_log(workdir, "resumed", 0))
  assert resumed_from % EVERY == 0 and resumed_from >= EVERY
  for process in (0, 1):
    full = _batch_log(reference, "reference", process)
    assert len(set(full)) == STEPS, "every batch of a host differs from its others"
    killed = _batch_log(workdir, "killed", process)
    assert killed[:resumed_from] == full[:resumed_from]
    assert _batch_log(workdir, "resumed", process) == full[resumed_from:], (
        f"process {process} resumed at another data position")


@pytest.mark.slow  # several 2-process launches
def test_a_one_process_checkpoint_resumes_under_two_processes(reference, mini_shards, tmp_path):
  workdir = str(tmp_path)
  train(_one_process_config(mini_shards), workdir, stop_at_step=EVERY)
  codes, outs = _finish(_launch(workdir, mini_shards, "resumed"))
  assert codes == [0, 0], outs[0][-3000:]
  ours, theirs = _losses(workdir), _losses(reference)
  assert sorted(ours) == sorted(theirs)
  assert max(abs(ours[s] - theirs[s]) / theirs[s] for s in ours) < 1e-6  # gloo's order, as above
  for process in (0, 1):  # data.streams=2: process i took up stream i's saved position
    assert _batch_log(workdir, "resumed", process) == _batch_log(reference, "reference", process)[EVERY:]


@pytest.mark.slow  # several 2-process launches
def test_sigterm_to_every_process_saves_one_step_and_exits_zero(reference, mini_shards, tmp_path):
  workdir = str(tmp_path)
  procs = _launch(workdir, mini_shards, "preempted")
  _signal_when(procs, workdir, lambda step: step >= 2 and step % EVERY, signal.SIGTERM)
  codes, outs = _finish(procs)
  assert codes == [0, 0], outs[0][-3000:] + outs[1][-3000:]
  saved = max(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())
  # The sync point is the step after the furthest any process had reached: the same on both.
  assert saved < STEPS and saved == metrics_rows(workdir)[-1]["step"], saved
  assert all(f"preempted at step {saved}, saved" in out for out in outs)
  codes, outs = _finish(_launch(workdir, mini_shards, "rerun"))
  assert codes == [0, 0], outs[0][-3000:]
  assert _losses(workdir) == _losses(reference)


def test_processes_given_different_configs_stop_in_one_line(tmp_path):
  port = free_port()
  procs = [subprocess.Popen(
      [sys.executable, os.path.join(ROOT, "launch", "train.py"), "--config=configs/stage1.py:smoke",
       f"--workdir={tmp_path}", f"--config.train.seed={i}"],
      cwd=ROOT, env=process_env(i, 2, 4, port), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
      text=True) for i in range(2)]
  codes, outs = _finish(procs, timeout=120)
  assert codes == [1, 1]
  for i, out in enumerate(outs):
    assert (f"config error: processes [1] were given another config than process 0 (this is process "
            f"{i})") in out
  assert not os.path.exists(tmp_path / "checkpoints")
