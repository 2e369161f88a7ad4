"""Training with --workdir=gs://... and --config.init_from=gs://... (the README's shared-storage runs)."""

import os
import subprocess
import sys

import jax
import pytest

from mio_jax import storage
from mio_jax.train.validate import ConfigError, validate
from train_on_gs_worker import tiny_config


def test_init_from_on_gs_is_checked_in_the_bucket(gs_dir):
  c = tiny_config()
  c.init_from = gs_dir + "/stage1"
  with pytest.raises(ConfigError, match=r"^config.init_from='gs://[^']+/stage1' does not exist$"):
    validate(c, jax.devices())
  storage.atomic_write_text(gs_dir + "/stage1/model_config.json", "{}")
  validate(c, jax.devices())  # found in the bucket, not as a local path


def _run_worker(gs_dir: str, reference_dir) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "train_on_gs_worker.py"),
                         gs_dir, str(reference_dir)], capture_output=True, text=True, timeout=600)


def _failure_text(run: subprocess.CompletedProcess) -> str:
  """The worker's output without the interpreter-shutdown noise of orbax's unfinished async writes
  ("Exception ignored in ... sys.meta_path is None"), which otherwise fills the tail and hides the
  traceback that made the run fail."""
  lines, skipping = [], False
  for line in run.stderr.splitlines():
    if line.startswith("Exception ignored in"):
      skipping = True
    elif skipping and not line.startswith((" ", "ImportError: sys.meta_path", "Traceback")):
      skipping = False
    if not skipping and not line.startswith("WARNING:gcsfs"):  # one per bucket open, without news
      lines.append(line)
  return run.stdout[-3000:] + "\n".join(lines)[-8000:]


# In a fresh interpreter: inside a pytest worker that had run many other slow tests, this run aborted
# the worker once (a C++ abort during the first train()) and failed twice on the emulator's answers,
# while it passed alone every time; a process of its own starts from nothing, as a real run does.
@pytest.mark.slow  # train, resume and export through the emulator; test_gcs_end_to_end stays
def test_train_resume_and_export_on_gs(gs_dir, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # a local "gs:" folder made by unconverted code stays in tmp_path
  run = _run_worker(gs_dir, tmp_path / "reference")  # no retry: gcs_emulator.py keeps GCS's preconditions
  assert run.returncode == 0, _failure_text(run)
  assert "train_on_gs: ok" in run.stdout
  assert not (tmp_path / "gs:").exists()
