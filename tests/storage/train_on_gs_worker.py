"""Run by tests/storage/test_train_on_gs.py in a fresh interpreter: train to step 2 on gs://, resume to
step 4 from the bucket, compare with an uninterrupted local run, export from the bucket to the bucket.

    python train_on_gs_worker.py GS_DIR REFERENCE_DIR   (emulator variables and XLA_FLAGS from the parent)
"""

import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [REPO]


def tiny_config(steps=4):
  from configs.base import stage_config
  c = stage_config(1, "smoke")
  c.vocab.text_model = os.path.join(REPO, "data", "vocab", "mini.model")  # the test changes directory
  c.vocab.image_codes = 1024
  c.model.vocab_size = 6126
  c.data.update(seq_len=32, global_batch=8)
  c.train.update(steps=steps, log_every=2, checkpoint_every=2, async_checkpointing=True)
  c.mesh.ici.update(data=2, fsdp=2, tensor=2)
  return c


def main(gs_dir: str, reference_dir: str) -> None:
  from mio_jax import storage
  from mio_jax.export.to_hf import export
  from mio_jax.train.loop import train

  run = gs_dir + "/run"
  first = train(tiny_config(), run, stop_at_step=2).losses
  assert storage.glob(run + "/checkpoints/2/params"), "no checkpoint in the bucket"
  second = train(tiny_config(), run).losses
  reference = train(tiny_config(), reference_dir).losses
  assert {**first, **second} == reference, (first, second, reference)  # resumed bit-identically
  rows = [json.loads(line) for line in storage.as_path(run + "/metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows] == [1, 2, 3, 4], rows
  summary = export(run, gs_dir + "/hf", with_tokenizer=False)
  assert summary["step"] == 4 and storage.as_path(gs_dir + "/hf/model.safetensors").exists()
  print("train_on_gs: ok")


if __name__ == "__main__":
  main(*sys.argv[1:])
