"""Training with --workdir=gs://... and --config.init_from=gs://... (the README's shared-storage runs)."""

import json
import os

import jax
import pytest

from configs.base import stage_config
from mio_jax import storage
from mio_jax.train.validate import ConfigError, validate


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tiny_config(steps=4):
  c = stage_config(1, "smoke")
  c.vocab.text_model = os.path.join(REPO, "data", "vocab", "mini.model")  # the test changes directory
  c.vocab.image_codes = 1024
  c.model.vocab_size = 6126
  c.data.update(seq_len=32, global_batch=8)
  c.train.update(steps=steps, log_every=2, checkpoint_every=2, async_checkpointing=True)
  c.mesh.ici.update(data=2, fsdp=2, tensor=2)
  return c


def test_init_from_on_gs_is_checked_in_the_bucket(gs_dir):
  c = tiny_config()
  c.init_from = gs_dir + "/stage1"
  with pytest.raises(ConfigError, match=r"^config.init_from='gs://[^']+/stage1' does not exist$"):
    validate(c, jax.devices())
  storage.atomic_write_text(gs_dir + "/stage1/model_config.json", "{}")
  validate(c, jax.devices())  # found in the bucket, not as a local path


def _train_resume_and_export(gs_dir, reference_dir):
  from mio_jax.export.to_hf import export
  from mio_jax.train.loop import train

  run = gs_dir + "/run"
  first = train(tiny_config(), run, stop_at_step=2).losses
  assert storage.glob(run + "/checkpoints/2/params"), "no checkpoint in the bucket"
  second = train(tiny_config(), run).losses
  reference = train(tiny_config(), str(reference_dir)).losses
  assert {**first, **second} == reference  # resumed from the bucket bit-identically
  rows = [json.loads(line) for line in storage.as_path(run + "/metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows] == [1, 2, 3, 4]
  summary = export(run, gs_dir + "/hf", with_tokenizer=False)
  assert summary["step"] == 4 and storage.as_path(gs_dir + "/hf/model.safetensors").exists()


@pytest.mark.slow  # train, resume and export through the emulator; test_gcs_end_to_end stays
def test_train_resume_and_export_on_gs(gs_dir, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # a local "gs:" folder made by unconverted code stays in tmp_path
  try:
    _train_resume_and_export(gs_dir, tmp_path / "reference")
  except ValueError as e:
    # The emulator (gcp-storage-emulator, one Python thread pool) sometimes answers tensorstore's
    # OCDBT manifest read with a response tensorstore rejects ("Malformed StorageGeneration"; seen
    # about 1 run in 7 on a loaded 2-core box). Only that error gets one more
    # try, in a fresh folder; anything else, or a second failure, fails the test.
    if "Malformed StorageGeneration" not in str(e):
      raise
    _train_resume_and_export(gs_dir + "/retry", tmp_path / "reference_retry")
  assert not (tmp_path / "gs:").exists()
