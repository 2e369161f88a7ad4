"""Logit processing and token choice: repetition penalty, temperature, top-p, greedy.

Order as Hugging Face `generate`: repetition penalty on the raw logits, then the (constraint) mask,
then temperature, then top-p, then a draw. A temperature of 0 means greedy (argmax).
Every function works on logits [batch, vocab] with per-row parameters [batch], so rows in different
modalities (different MIO settings) share one jitted step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

NEG_INF = -jnp.inf


def repetition_penalty(logits: jax.Array, seen: jax.Array, penalty: jax.Array) -> jax.Array:
  """CTRL/HF penalty on ids already in the sequence (`seen` bool [b, V]): positive logits are
  divided by `penalty`, negative ones multiplied (both make the token less likely)."""
  p = penalty[:, None]
  penalised = jnp.where(logits > 0, logits / p, logits * p)
  return jnp.where(seen, penalised, logits)


def top_p_mask(logits: jax.Array, top_p: jax.Array) -> jax.Array:
  """Keep the smallest set of most likely ids whose probability reaches `top_p` (always >= 1 id).

  An id is kept when the probability mass of the ids ranked strictly above it is < top_p; ties at
  the boundary are broken by sort order.
  """
  order = jnp.argsort(-logits, axis=-1)
  sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
  probs = jax.nn.softmax(sorted_logits, axis=-1)
  mass_above = jnp.cumsum(probs, axis=-1) - probs
  keep_sorted = mass_above < top_p[:, None]
  keep_sorted = keep_sorted.at[:, 0].set(True)
  keep = jnp.zeros_like(keep_sorted).at[jnp.arange(logits.shape[0])[:, None], order].set(keep_sorted)
  return jnp.where(keep, logits, NEG_INF)


def choose(key: jax.Array, logits: jax.Array, allowed: jax.Array, seen: jax.Array, *,
           temperature: jax.Array, top_p: jax.Array, penalty: jax.Array) -> jax.Array:
  """Next ids [b]: penalty, mask to `allowed` [b, V], then argmax (temperature 0) or a top-p draw."""
  logits = logits.astype(jnp.float32)
  logits = repetition_penalty(logits, seen, penalty)
  logits = jnp.where(allowed, logits, NEG_INF)
  greedy = jnp.argmax(logits, axis=-1)
  safe_t = jnp.where(temperature > 0, temperature, 1.0)
  scaled = top_p_mask(logits / safe_t[:, None], top_p)
  drawn = jax.random.categorical(key, scaled, axis=-1)
  return jnp.where(temperature > 0, drawn, greedy).astype(jnp.int32)
