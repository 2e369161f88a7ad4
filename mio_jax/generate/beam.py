"""Beam search for text (MIO decodes text greedily or with beams), over the same KV cache.

One prompt; beams are batch rows of the cache and are re-gathered after every step. A beam that
emits a stop id is finished: it keeps its score and can only extend with that stop id (at no
cost), so it competes with the open beams to the end. The winner maximises
sum(log p) / length**length_penalty (Hugging Face's rule, length counting the stop id).
With a layout the beams are text only: code ids and all four block tags are masked.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from mio_jax.generate import constraints
from mio_jax.generate.constraints import Layout
from mio_jax.generate.decode import init_cache
from mio_jax.model.token_logprobs import log_probs
from mio_jax.model.transformer import Transformer


def beam_search(model: Transformer, prompt, *, num_beams: int, max_new_tokens: int,
                stop_ids: tuple[int, ...] = (), layout: Layout | None = None,
                length_penalty: float = 1.0) -> tuple[jax.Array, jax.Array]:
  """Best new ids [max_new_tokens] (the stop id repeats after it) and every beam's final
  (unnormalised) log probability [num_beams], best first by the length-penalised score."""
  graphdef, state = nnx.split(model)
  return _beam_search(graphdef, state, jnp.asarray(prompt, jnp.int32), num_beams=num_beams,
                      max_new_tokens=max_new_tokens, stop_ids=tuple(int(i) for i in stop_ids),
                      layout=layout, length_penalty=float(length_penalty))


@functools.partial(jax.jit, static_argnames=("graphdef", "num_beams", "max_new_tokens", "stop_ids",
                                             "layout", "length_penalty"))
def _beam_search(graphdef, state, prompt, *, num_beams, max_new_tokens, stop_ids, layout, length_penalty):
  model = nnx.merge(graphdef, state)
  # A padded vocabulary's extra ids are never candidates.
  k, prompt_len, vocab = num_beams, prompt.shape[0], model.cfg.used_vocab_size
  cache = init_cache(model.cfg, 1, prompt_len + max_new_tokens)
  logits, cache = model.decode(prompt[None], jnp.ones((1, prompt_len), jnp.int32),
                               jnp.arange(prompt_len, dtype=jnp.int32)[None], cache)
  tile = lambda a, axis: jnp.repeat(a, k, axis=axis)
  cache = {"k": tile(cache["k"], 1), "v": tile(cache["v"], 1),
           "segment_ids": tile(cache["segment_ids"], 0), "index": cache["index"]}
  logits = tile(logits[:, -1, :vocab], 0)
  if layout is not None:
    ids = jnp.arange(vocab)[None]
    allowed = (constraints.allowed_ids(layout, constraints.initial_state(1))
               & (ids != layout.image_start) & (ids != layout.speech_start))
  else:
    allowed = jnp.ones((1, vocab), bool)
  stops = jnp.asarray(stop_ids or (-1,), jnp.int32)
  first_stop = stops[0]
  scores = jnp.full((k,), -jnp.inf).at[0].set(0.0)  # all beams start equal: keep one
  out = jnp.zeros((k, max_new_tokens), jnp.int32)
  finished = jnp.zeros((k,), bool)
  lengths = jnp.zeros((k,), jnp.int32)

  def body(step, carry):
    logits, cache, scores, out, finished, lengths, params = carry
    logp = log_probs(logits, allowed)
    # A finished beam continues only with a stop id, at no cost.
    frozen = jnp.full((vocab,), -jnp.inf).at[first_stop].set(0.0)
    logp = jnp.where(finished[:, None], frozen[None], logp)
    flat = (scores[:, None] + logp).reshape(-1)
    scores, idx = jax.lax.top_k(flat, k)
    beam, token = idx // vocab, (idx % vocab).astype(jnp.int32)
    was_finished = finished[beam]
    out = out[beam].at[:, step].set(token)
    lengths = lengths[beam] + (~was_finished)
    finished = was_finished | jnp.isin(token, stops)
    cache = {"k": cache["k"][:, beam], "v": cache["v"][:, beam],
             "segment_ids": cache["segment_ids"][beam], "index": cache["index"]}
    step_model = nnx.merge(graphdef, params)  # rebuilt inside this trace (nnx rule)
    pos = jnp.full((k, 1), prompt_len + step, jnp.int32)
    logits, cache = step_model.decode(token[:, None], jnp.ones((k, 1), jnp.int32), pos, cache)
    return logits[:, -1, :vocab], cache, scores, out, finished, lengths, params

  carry = (logits, cache, scores, out, finished, lengths, state)
  _, _, scores, out, finished, lengths, _ = jax.lax.fori_loop(0, max_new_tokens, body, carry)
  ranked = jnp.argsort(-(scores / jnp.maximum(lengths, 1).astype(jnp.float32) ** length_penalty))
  return out[ranked[0]], scores[ranked]
