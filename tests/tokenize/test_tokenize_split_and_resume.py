"""Work split over processes and the kill-and-rerun guarantee: both end with the very bytes of one
uninterrupted single-process run (shards, index, quarantine)."""

import glob
import os
import re
import subprocess
import sys

import pytest

from mio_jax.tokenize import job
import encoder_doubles
import tokenize_helpers as helpers

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SUBSET = {"image_text": 4, "speech_text": 4, "text": 3, "conversation": 5}


def output_files(out) -> dict[str, bytes]:
  """Every committed file of a job's output, by relative path (temporaries would show up too)."""
  files = {}
  for path in glob.glob(os.path.join(str(out), "**", "*"), recursive=True) + glob.glob(
      os.path.join(str(out), "**", ".*"), recursive=True):
    if os.path.isfile(path):
      with open(path, "rb") as f:
        files[os.path.relpath(path, out)] = f.read()
  return files


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  """A mini slice plus planted bad inputs, and the output of one uninterrupted run over it."""
  root = tmp_path_factory.mktemp("split")
  spec = ",".join(helpers.subset_manifests(str(root / "in"), SUBSET))
  bad_spec, bad, n_good = helpers.plant_bad_inputs(str(root / "bad"))
  spec += "," + bad_spec
  summary = job.run(helpers.job_config(spec, root / "reference", shard_size=4), helpers.shared_encoders())
  # Resampling is on, so the planted 8 kHz clip is good here.
  assert summary["job"]["quarantined"] == len(bad) - 1
  assert summary["job"]["written"] == sum(SUBSET.values()) + n_good + 1
  return spec, output_files(root / "reference")


@pytest.mark.slow  # three tokenizing processes
def test_three_processes_split_disjointly_and_completely(tmp_path, corpus):
  spec, reference = corpus
  n_shards = sum(name.startswith("shards/") and name.endswith(".array_record") for name in reference)
  seen = set()
  for rank in (2, 0, 1):  # any order: ownership is shard % count, not arrival
    c = helpers.job_config(spec, tmp_path, shard_size=4)
    c.process_index, c.process_count = rank, 3
    summary = job.run(c, helpers.shared_encoders())
    shards = {int(re.search(r"shard-(\d+)-of", f).group(1))
              for f in os.listdir(tmp_path / "shards")} - seen
    assert shards == set(range(rank, n_shards, 3)), rank  # this process wrote exactly its own
    seen |= shards
    assert ("job" in summary) == (len(seen) == n_shards)
    assert os.path.exists(tmp_path / "index.json") == (len(seen) == n_shards)
  assert output_files(tmp_path) == reference


@pytest.fixture(scope="module")
def jax_cache(tmp_path_factory):
  """A persistent compilation cache shared by the launched jobs (reruns then skip compiling)."""
  return str(tmp_path_factory.mktemp("jax_cache"))


def _launch(spec, out, cache, encoder_dirs, kill_at=None):
  """launch/tokenize.py through tests/tokenize/tokenize_cli_worker.py; encoder_dirs None: the doubles."""
  speech_dir, image_dir = encoder_dirs or ("", "")
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  cmd = [sys.executable, os.path.join(REPO, "tests", "tokenize", "tokenize_cli_worker.py"),
         f"--kill_at={kill_at or ''}", f"--doubles={encoder_dirs is None}",
         f"--config={os.path.join(REPO, 'configs', 'tokenize.py')}:mini", f"--config.input={spec}",
         f"--config.output_dir={out}", "--config.shard_size=4", "--config.progress=False",
         f"--config.speech_tokenizer={speech_dir}", f"--config.image_tokenizer={image_dir}",
         f"--config.image_batch_size={helpers.TEST_BATCH}", f"--config.speech_batch_size={helpers.TEST_BATCH}",
         f"--config.speech_pad_multiple={helpers.TEST_PAD}"]
  return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=REPO)


def _kill_and_rerun(spec, reference, out, cache, encoder_dirs, kill_points):
  for kill_at in kill_points:
    proc = _launch(spec, out, cache, encoder_dirs, kill_at)
    assert proc.returncode == -9, (kill_at, proc.returncode, proc.stderr[-2000:])
    assert not os.path.exists(out / "index.json")
    if kill_at.split(":")[0] in ("shard_half_written", "shard_tmp_written"):
      # A half-written or not yet renamed shard is left under a temporary name.
      assert [f for f in output_files(out) if f.startswith("shards/.") and f.endswith(".tmp")]
  proc = _launch(spec, out, cache, encoder_dirs)
  assert proc.returncode == 0, proc.stderr[-2000:]
  done_before = int(re.search(r"(\d+) already done", proc.stdout).group(1))
  assert done_before >= 1  # committed shards were skipped, not redone
  assert "(checked)" in proc.stdout
  assert output_files(out) == reference  # same names, same bytes, no temporaries left


def test_job_killed_mid_shard_reruns_to_the_uninterrupted_result(tmp_path, corpus, jax_cache):
  """The job's commit protocol with the code-from-signal test doubles as encoders (two launches
  of the ported tokenizers cost a minute on a loaded 2-core box; the slow test below uses them)."""
  spec, _ = corpus
  c = helpers.job_config(spec, tmp_path / "reference", shard_size=4)
  job.run(c, encoder_doubles.use_double_encoders(c))
  # SIGKILL while the second shard's temporary file is half written.
  _kill_and_rerun(spec, output_files(tmp_path / "reference"), tmp_path / "out", jax_cache,
                  None, ["shard_half_written:2"])


@pytest.mark.slow
def test_job_killed_at_every_commit_step_reruns_to_the_uninterrupted_result(tmp_path, corpus, jax_cache):
  # Ported tiny tokenizers, killed again on each rerun: mid-write of a shard, after writing it but
  # before its rename, between its rename and its index record, right after a quarantine file,
  # right after an index record.
  _kill_and_rerun(*corpus, tmp_path / "out", jax_cache, helpers.tiny_tokenizer_dirs(),
                  ["shard_half_written:2", "shard_tmp_written:1", "shard_committed:1",
                   "quarantine_committed:2", "index_committed:1"])
