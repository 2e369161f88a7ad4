"""Cross-entropy that never holds the whole [batch, length, vocab] logits (MaxText's vocab tiling,
levanter's blockwise loss).

The final hidden states are cut along the sequence into chunks of `chunk` tokens per row; a scan
computes each chunk's logits (float32 accumulation), its per-token losses, and drops the logits.
Each chunk is rematerialised in the backward pass, so at most one chunk's logits and their gradient
are live: with MIO-7B's batch on v5p-128 that is 8 x 350 x 76,800 float32 per chip instead of
8 x 2800 x 76,800. Rows stay split over the batch axes and the vocab over tensor, as in the plain path.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mio_jax.model.token_logprobs import cross_entropy
from mio_jax.model.vocab_padding import mask_padded_logits
from mio_jax.parallel.rules import constrain


def chunked_token_losses(hidden: jax.Array, kernel: jax.Array, targets: jax.Array, *, z_loss: float,
                         chunk: int, used_vocab: int) -> tuple[jax.Array, jax.Array]:
  """As cross_entropy(hidden @ kernel, targets, z_loss=z_loss), float32 [batch, length] each.

  `kernel` [embed, vocab] is the LM head; ids >= `used_vocab` are vocabulary padding (masked). A
  length that `chunk` does not divide is padded with ignored positions.
  """
  batch, length, embed = hidden.shape
  chunks = -(-length // chunk)
  pad = chunks * chunk - length
  if pad:
    hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
    targets = jnp.pad(targets, ((0, 0), (0, pad)))
  # [chunks, batch, chunk, ...]: the scan walks the sequence; every chunk keeps the batch split.
  hs = hidden.reshape(batch, chunks, chunk, embed).swapaxes(0, 1)
  ts = targets.reshape(batch, chunks, chunk).swapaxes(0, 1)
  kernel = kernel.astype(hidden.dtype)
  vocab = kernel.shape[1]

  @jax.checkpoint  # the backward recomputes this chunk's logits rather than keeping every chunk's
  def chunk_losses(h, t):
    logits = jnp.einsum("bte,ev->btv", h, kernel, preferred_element_type=jnp.float32)
    if used_vocab < vocab:
      logits = mask_padded_logits(logits, used_vocab)
    logits = constrain(logits, ("batch", "length", "act_vocab"))
    return cross_entropy(logits, t, z_loss=z_loss)

  def body(_, xs):
    return None, chunk_losses(*xs)

  _, (loss, nll) = jax.lax.scan(body, None, (hs, ts))
  unchunk = lambda x: x.swapaxes(0, 1).reshape(batch, chunks * chunk)[:, :length]
  return unchunk(loss), unchunk(nll)
