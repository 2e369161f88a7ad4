"""The next-token log-likelihood, written once: training's loss (plain and chunked), the held-out
pairing score and beam search all turn logits into log-probabilities here.

Logits [..., vocab] are normalised in float32 over the ids `allowed` (default: all); the others get
probability 0. A padded vocabulary's extra ids never get any probability: the model's logits already
hold them at the dtype's minimum (mio_jax/model/vocab_padding.py), and beam search drops them.

    log p(id) = logit(id) - log_z,   log_z = log sum over allowed ids of exp(logit)

z-loss (PaLM) adds z_loss * log_z**2 to each token's loss, which keeps log_z near 0.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _normalised(logits: jax.Array, allowed: jax.Array | None) -> tuple[jax.Array, jax.Array]:
  """float32 logits, -inf outside `allowed`, and log_z [...]."""
  logits = logits.astype(jnp.float32)
  if allowed is not None:
    logits = jnp.where(allowed, logits, -jnp.inf)
  return logits, jax.nn.logsumexp(logits, axis=-1)


def log_probs(logits: jax.Array, allowed: jax.Array | None = None) -> jax.Array:
  """log p of every id [..., vocab], float32; -inf outside `allowed` (bool, broadcast to logits)."""
  logits, log_z = _normalised(logits, allowed)
  return logits - log_z[..., None]


def cross_entropy(logits: jax.Array, targets: jax.Array, *, z_loss: float = 0.0,
                  allowed: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """Per-token loss -log p(target) + z_loss * log_z**2, and -log p(target) alone; float32 [...].

  Computed as log_z less the target's logit: no [..., vocab] array of log-probabilities is formed.
  """
  logits, log_z = _normalised(logits, allowed)
  target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  nll = log_z - target_logit
  return nll + z_loss * jnp.square(log_z), nll
