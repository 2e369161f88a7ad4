"""Held-out evaluation in the train loop: its losses against numpy's from the model's logits, the
same numbers across a resume, and held-out shards with the pairing margin against pairing.py's."""

import json

import numpy as np
import pytest
from train_helpers import eval_config, metrics_rows, smoke_on_shards

from mio_jax.data.pipeline import build_heldout_dataset, heldout_paths
from mio_jax.evaluate.pairing import pairing_losses
from mio_jax.generate.load import load_model
from mio_jax.train.code_order import training_vocab
from mio_jax.train.evaluation import HELDOUT_SYNTHETIC_STEP, read_pairing_samples
from mio_jax.train.loop import train
from mio_jax.train.synthetic_batches import synthetic_row

pytestmark = pytest.mark.slow  # each case trains with held-out evaluation

STEPS = 8
EVAL_KEYS = ("eval_loss", "eval_loss_text", "eval_loss_image", "eval_loss_speech")


def eval_rows(workdir) -> dict[int, dict]:
  return {r["step"]: {k: r[k] for k in EVAL_KEYS} for r in metrics_rows(workdir) if "eval_loss" in r}


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("eval_full")
  train(eval_config(), str(workdir))
  return workdir


def numpy_eval_losses(model, config) -> dict[str, float | None]:
  """The held-out synthetic rows scored from the model's logits in float64 numpy."""
  ranges = training_vocab(config).modality_ranges()
  sums = {k: 0.0 for k in ["all", *ranges]}
  counts = dict(sums)
  rows = [synthetic_row(config.eval.seed, HELDOUT_SYNTHETIC_STEP + k, r, config.data.seq_len,
                        config.model.vocab_size)
          for k in range(config.eval.batches) for r in range(config.data.global_batch)]
  batch = {key: np.stack([row[key] for row in rows]) for key in rows[0]}
  all_logits = np.asarray(model(batch["inputs"], batch["segment_ids"], batch["positions"]), np.float64)
  for row, logits in zip(rows, all_logits):
    top = logits.max(-1, keepdims=True)
    log_z = top[:, 0] + np.log(np.exp(logits - top).sum(-1))
    nll = log_z - logits[np.arange(len(logits)), row["targets"]]  # this sequence's token losses
    mask = row["loss_mask"].astype(np.float64)
    sums["all"] += (nll * mask).sum()
    counts["all"] += mask.sum()
    for name, (lo, hi) in ranges.items():
      m = mask * ((row["targets"] >= lo) & (row["targets"] < hi))
      sums[name] += (nll * m).sum()
      counts[name] += m.sum()
  out = {"eval_loss": sums["all"] / counts["all"]}
  out.update({f"eval_loss_{n}": sums[n] / counts[n] if counts[n] else None for n in ranges})
  return out


def test_eval_rows_at_first_every_and_last_step_match_numpy_losses(full_run):
  rows = eval_rows(full_run)
  assert sorted(rows) == [1, 4, 8]
  assert rows[8]["eval_loss"] < rows[1]["eval_loss"] - 0.1, rows  # the held-out rows are learnable
  every_row = metrics_rows(full_run)
  assert [r["step"] for r in every_row] == list(range(1, STEPS + 1)), "eval joins the step's own row"
  assert all(r["eval_seconds"] > 0 for r in every_row if "eval_loss" in r)
  model, _ = load_model(str(full_run))  # the newest checkpoint: step 8, the last evaluation's params
  expected = numpy_eval_losses(model, eval_config())
  for key in EVAL_KEYS:
    assert rows[8][key] == pytest.approx(expected[key], rel=2e-5), key


def test_eval_is_the_same_across_a_resume(full_run, tmp_path):
  train(eval_config(), str(tmp_path), stop_at_step=4)
  assert sorted(eval_rows(tmp_path)) == [1, 4]
  train(eval_config(), str(tmp_path))
  assert eval_rows(tmp_path) == eval_rows(full_run)


def test_heldout_batches_are_the_same_at_every_build(mini_shards):
  c = smoke_on_shards(mini_shards)
  vocab = training_vocab(c)
  draw = lambda: [next(it) for it in [iter(build_heldout_dataset(c.data, vocab, mini_shards, seed=5))]
                  for _ in range(3)]
  first, again = draw(), draw()
  for a, b in zip(first, again):
    for key in ("inputs", "targets", "loss_mask", "segment_ids"):
      np.testing.assert_array_equal(a[key], b[key])
  assert first[0]["loss_mask"].sum() > 0


def test_heldout_shards_give_modality_losses_and_pairing_margins(mini_shards, tmp_path):
  c = smoke_on_shards(mini_shards, steps=2, checkpoint_every=2)
  c.data.seq_len = 320  # the image pairs' sequences (about 280 tokens) fit a row
  c.eval.update(every=2, batches=1, mixed_shards=mini_shards, pairing_samples=4)
  train(c, str(tmp_path))
  row = [r for r in metrics_rows(tmp_path) if r["step"] == 2][0]
  assert np.isfinite(row["eval_loss"]) and np.isfinite(row["eval_loss_text"])
  # The oracle: pairing.py's own scoring of the same samples with the saved step-2 model.
  model, vocab = load_model(str(tmp_path))
  samples = read_pairing_samples(heldout_paths(c.data, mini_shards), 4)
  for result in pairing_losses(model, vocab, samples, stage=1):
    assert row[f"eval_pairing_margin_{result.kind}"] == pytest.approx(result.margin, abs=2e-4), result
  assert {"eval_pairing_margin_image_text", "eval_pairing_margin_speech_text"} <= set(row)
  json.dumps(row)  # a plain JSON row
