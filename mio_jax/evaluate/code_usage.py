"""Codebook utilisation: how many of an image tokenizer's K ids a set of images uses, and how evenly
(UniCode2's failure mode of naively scaled codebooks, issue #21; docs/unicode2.md).

    usage(ids, K)  ->  {"codes", "used", "used_share", "perplexity", "max_used_share"}

`perplexity` is exp of the entropy of the ids' histogram: K when every id is used equally, 1 when one
id takes all. `max_used_share` is min(1, codes / K): a set of n codes cannot use more than n ids.

Two views of a trained model's image ids:
- the tokenizer's: the codes the shards hold (`image_codes`), the same for every decoder trained on them;
- the decoder's: `predicted_image_codes`, the id the model ranks first among the K image ids at each
  image position of held-out image-text samples, teacher-forced in the understanding template (image
  first), with the true code's loss.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mio_jax.data.shards import Sample
from mio_jax.data.templates import DEFAULT_TEMPLATE_SET
from mio_jax.evaluate.pairing import scored_tokens
from mio_jax.model.token_logprobs import cross_entropy
from mio_jax.vocab import Vocabulary


def usage(ids: np.ndarray, num_codes: int) -> dict:
  ids = np.asarray(ids).reshape(-1)
  if ids.size and (ids.min() < 0 or ids.max() >= num_codes):
    raise ValueError(f"code ids outside [0, {num_codes}): {ids.min()}..{ids.max()}")
  counts = np.bincount(ids, minlength=num_codes)
  p = counts[counts > 0] / max(ids.size, 1)
  return {"codes": int(ids.size), "used": int((counts > 0).sum()),
          "used_share": float((counts > 0).sum() / num_codes),
          "perplexity": float(np.exp(-(p * np.log(p)).sum())) if ids.size else 0.0,
          "max_used_share": float(min(1.0, ids.size / num_codes))}


def image_codes(samples: list[Sample]) -> np.ndarray:
  """Every image code of every image part of the samples, concatenated (int64)."""
  codes = [np.asarray(p["codes"]).reshape(-1) for s in samples for p in s.parts if p["type"] == "image"]
  return np.concatenate(codes).astype(np.int64) if codes else np.zeros(0, np.int64)


@functools.partial(jax.jit, static_argnums=(0, 4, 5))
def _image_predictions(graphdef, state, ids, segment_ids, image_base, image_codes_):
  model = nnx.merge(graphdef, state)
  positions = jnp.broadcast_to(jnp.arange(ids.shape[1]), ids.shape)
  logits = model(ids[:, :-1], segment_ids[:, :-1], positions[:, :-1])
  best = jnp.argmax(logits[..., image_base:image_base + image_codes_], axis=-1).astype(jnp.int32)
  return best, cross_entropy(logits, ids[:, 1:])[1]


def predicted_image_codes(model, vocab: Vocabulary, samples: list[Sample], *, stage: int,
                          template_set: str = DEFAULT_TEMPLATE_SET, batch: int = 8) -> dict:
  """-> {"predicted": int64 [n], "target": int64 [n], "loss": float32 [n]} over every image-code
  position of the image_text samples (code ids, 0-based in the image range)."""
  group = [s for s in samples if s.kind == "image_text"]
  seqs = [scored_tokens(s, vocab, stage, template_set)[0] for s in group]
  if not seqs:
    raise ValueError("predicted_image_codes: no image_text sample")
  length = max(len(s) for s in seqs)
  graphdef, state = nnx.split(model)
  lo, hi = vocab.image_base, vocab.image_base + vocab.image_codes
  out = {"predicted": [], "target": [], "loss": []}
  for start in range(0, len(seqs), batch):
    ids = np.zeros((batch, length), np.int32)  # a fixed shape: one compile
    segments = np.zeros_like(ids)
    for row, seq in enumerate(seqs[start:start + batch]):
      ids[row, :len(seq)], segments[row, :len(seq)] = seq, 1
    best, loss = (np.asarray(a) for a in _image_predictions(graphdef, state, jnp.asarray(ids),
                                                              jnp.asarray(segments), lo, vocab.image_codes))
    target = ids[:, 1:]
    mask = (segments[:, 1:] == 1) & (target >= lo) & (target < hi)
    out["predicted"].append(best[mask].astype(np.int64))
    out["target"].append((target[mask] - lo).astype(np.int64))
    out["loss"].append(loss[mask].astype(np.float32))
  return {k: np.concatenate(v) for k, v in out.items()}
