"""`launch/train.py --config=configs/stage2.py:smoke --config.data.mixed_shards=GLOB` trains on one
tokenization job's shards with no other data flag: data.source switches to shards and every source
reads its own kind (the checkpointed iterator counts samples per source)."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KINDS = ("image_text", "speech_text", "video_text", "interleaved", "text", "conversation")


@pytest.fixture(scope="module")
def mini_job(tmp_path_factory):
  """The mini corpus (4 of each kind) tokenized by the job, test-double encoders."""
  from tokenize_helpers import tokenize_mini_subset
  tmp = tmp_path_factory.mktemp("mixed_train")
  summary = tokenize_mini_subset(str(tmp / "in"), str(tmp / "tok"), per_kind=4, shard_size=6)
  assert summary["job"]["written"] == 4 * len(KINDS)
  return str(tmp / "tok")


@pytest.mark.slow  # a 1536-token compile; train() with mixed_shards is in tests/train
def test_smoke_stage2_trains_on_mixed_shards_from_one_flag(mini_job, tmp_path):
  workdir = tmp_path / "run"
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  cmd = [sys.executable, os.path.join(REPO, "launch", "train.py"),
         f"--config={os.path.join(REPO, 'configs', 'stage2.py')}:smoke", f"--workdir={workdir}",
         f"--config.data.mixed_shards={mini_job}/shards/*.array_record",
         # Short: 2 steps. seq_len 1536 fits the 4-frame videos (4 x 258 ids) so every kind counts.
         "--config.train.steps=2", "--config.train.checkpoint_every=2", "--config.data.seq_len=1536"]
  proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "trained to step 2" in proc.stdout
  assert "data.source 'synthetic' -> 'shards'" in proc.stdout + proc.stderr
  with open(workdir / "checkpoints" / "2" / "data" / "process_0-of-1.json") as f:  # grain's handler
    state = json.load(f)["iterator"]
  names = sorted(k for k in KINDS if k != "conversation")  # stage 2's sources (weight > 0)
  stats = state["stream_states"]["0"]["stats"]  # one process, one row stream
  per_source = dict(zip(names, stats))
  assert all(per_source[k] > 0 for k in names), per_source
  assert sum(stats[len(names):]) == 0  # nothing dropped, truncated or skipped
