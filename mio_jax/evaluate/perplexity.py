"""Held-out perplexity per modality: the training loss, measured on samples training never saw.

Each held-out sample is laid out as training lays it out in `stage` (mio_jax/data/templates.py; a
pair's direction, e.g. caption vs image generation, drawn with a fixed seed per sample so a rerun
scores the same sequences). Every token the template weights is scored by the model's next-token
loss (mio_jax/model/token_logprobs.py, through pairing.token_losses) and counted under the modality
of the token predicted (Vocabulary.modality_ranges: special tokens count as text), exactly as the
train step splits `loss_text` / `loss_image` / `loss_speech`.

    modality_perplexity(model, vocab, samples, stage=3)
    # {"text": {"tokens": 812, "loss": 2.91, "perplexity": 18.4}, "image": {...}, "speech": {...}, "all": {...}}

perplexity = exp(loss), loss = mean nats per token over all held-out tokens of that modality.
"""

from __future__ import annotations

import math

import numpy as np

from mio_jax.data.shards import Sample
from mio_jax.data.templates import DEFAULT_TEMPLATE_SET, TemplateOptions, build_tokens
from mio_jax.evaluate.pairing import token_losses
from mio_jax.vocab import Vocabulary


def heldout_sequences(vocab: Vocabulary, samples: list[Sample], *, stage: int, seed: int = 0,
                      template_set: str = DEFAULT_TEMPLATE_SET) -> list[tuple[np.ndarray, np.ndarray]]:
  """(ids, loss weights) of each sample in `stage`'s training layout, direction drawn per sample."""
  opts = TemplateOptions(stage=stage, template_set=template_set)
  return [build_tokens(s, vocab, np.random.default_rng([seed, i]), opts, where=s.source)
          for i, s in enumerate(samples)]


def _summary(loss_sum: float, tokens: float) -> dict:
  if not tokens:
    return {"tokens": 0, "loss": None, "perplexity": None}
  loss = loss_sum / tokens
  return {"tokens": int(tokens), "loss": loss, "perplexity": math.exp(min(loss, 700.0))}


def modality_perplexity(model, vocab: Vocabulary, samples: list[Sample], *, stage: int,
                        batch_size: int = 8, seed: int = 0,
                        template_set: str = DEFAULT_TEMPLATE_SET) -> dict[str, dict]:
  """{modality: {"tokens", "loss", "perplexity"}} for text, image, speech and all tokens together;
  a modality with no held-out tokens has loss and perplexity None."""
  ranges = vocab.modality_ranges()
  sums = {name: [0.0, 0.0] for name in (*ranges, "all")}
  sequences = heldout_sequences(vocab, samples, stage=stage, seed=seed, template_set=template_set)
  for start in range(0, len(sequences), batch_size):
    chunk = sequences[start:start + batch_size]
    # Short last batches are filled with copies of the first row (dropped below), so every batch
    # has one shape; lengths round up to 64 for the same reason.
    ids = [seq for seq, _ in chunk] + [chunk[0][0]] * (batch_size - len(chunk))
    losses = token_losses(model, ids, length_multiple=64)
    for row, (seq, weights) in enumerate(chunk):
      nll, targets, w = losses[row, :len(seq) - 1], seq[1:], weights[1:]  # weight of predicting it
      for name, (lo, hi) in ranges.items():
        m = w * ((targets >= lo) & (targets < hi))
        sums[name][0] += float((nll * m).sum())
        sums[name][1] += float(m.sum())
      sums["all"][0] += float((nll * w).sum())
      sums["all"][1] += float(w.sum())
  return {name: _summary(*s) for name, s in sums.items()}
