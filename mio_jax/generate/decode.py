"""Prefill + cached decode loop, one jitted `jax.lax.while_loop` over a fixed-size KV cache.

    ids, done = generate(model, prompt, key=..., layout=..., settings=..., max_new_tokens=...)

The cache has prompt_len + max_new_tokens slots. Prompts in a batch may differ in length: pass them
left-padded with `prompt_lengths`; padding gets segment id 0 (invisible to real tokens) and
positions restart at 0 on each row's first real token, so a row decodes as it would alone.
The model math is the model's own (`Transformer.decode`); nothing here re-implements attention.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mio_jax.generate import constraints
from mio_jax.generate.constraints import Layout
from mio_jax.generate.sampling import choose
from mio_jax.model.transformer import ModelConfig, Transformer


@dataclasses.dataclass(frozen=True)
class Settings:
  """Per-modality (text, image, speech) sampling. Temperature 0 = greedy.

  Defaults are MIO's: greedy text; top-p 0.7 for images and speech; repetition penalty 1.15 for
  speech (and for video: pass image_penalty=1.15 when the image blocks are video frames).
  """
  text_temperature: float = 0.0
  text_top_p: float = 1.0
  text_penalty: float = 1.0
  image_temperature: float = 1.0
  image_top_p: float = 0.7
  image_penalty: float = 1.0
  speech_temperature: float = 1.0
  speech_top_p: float = 0.7
  speech_penalty: float = 1.15

  def table(self, name: str) -> jax.Array:
    return jnp.asarray([getattr(self, f"{m}_{name}") for m in constraints.MODES], jnp.float32)


def init_cache(cfg: ModelConfig, batch: int, slots: int) -> dict:
  shape = (cfg.num_layers, batch, slots, cfg.num_kv_heads, cfg.head_dim)
  return {"k": jnp.zeros(shape, cfg.dtype), "v": jnp.zeros(shape, cfg.dtype),
          "segment_ids": jnp.zeros((batch, slots), jnp.int32), "index": jnp.zeros((), jnp.int32)}


def left_padded(prompts: list, length_multiple: int = 64) -> tuple[np.ndarray, np.ndarray]:
  """Prompts of any lengths as one left-padded int32 batch [n, length] (length rounded up to
  `length_multiple`: fewer shapes to compile) and their lengths, as `generate` takes them."""
  length = -(-max(len(p) for p in prompts) // length_multiple) * length_multiple
  batch = np.zeros((len(prompts), length), np.int32)
  for r, p in enumerate(prompts):
    batch[r, length - len(p):] = p
  return batch, np.asarray([len(p) for p in prompts], np.int32)


def prompt_inputs(prompt: jax.Array, prompt_lengths: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Segment ids (1 real, 0 left padding) and positions (0 at each row's first real token)."""
  pad = prompt.shape[1] - prompt_lengths[:, None]
  slot = jnp.arange(prompt.shape[1])[None, :]
  return (slot >= pad).astype(jnp.int32), jnp.maximum(slot - pad, 0).astype(jnp.int32)


def generate(model: Transformer, prompt, *, key: jax.Array, max_new_tokens: int,
             layout: Layout | None = None, settings: Settings = Settings(),
             stop_ids: tuple[int, ...] = (), prompt_lengths=None,
             stop_after_media: bool = False) -> tuple[jax.Array, jax.Array]:
  """New ids [batch, max_new_tokens] (after a stop id, the stop id repeats) and done [batch].

  `layout` None decodes unconstrained (every row stays in text mode). Stop ids end a row only in
  text mode, so a code id that equals one cannot end a media block. `stop_after_media` also ends a
  row at the closing tag of a media block (`</image>`, `</spch>`): one image or utterance, no more.
  """
  prompt = jnp.asarray(prompt, jnp.int32)
  if prompt_lengths is None:
    prompt_lengths = jnp.full((prompt.shape[0],), prompt.shape[1], jnp.int32)
  graphdef, state = nnx.split(model)
  return _generate(graphdef, state, prompt, jnp.asarray(prompt_lengths, jnp.int32), key,
                   max_new_tokens=max_new_tokens, layout=layout, settings=settings,
                   stop_ids=tuple(int(i) for i in stop_ids), stop_after_media=stop_after_media)


@functools.partial(jax.jit, static_argnames=("graphdef", "max_new_tokens", "layout", "settings", "stop_ids",
                                             "stop_after_media"))
def _generate(graphdef, state, prompt, prompt_lengths, key, *, max_new_tokens, layout, settings, stop_ids,
              stop_after_media):
  model = nnx.merge(graphdef, state)
  batch, prompt_len = prompt.shape
  vocab = model.cfg.used_vocab_size  # a padded vocabulary's extra ids are never candidates
  segment_ids, positions = prompt_inputs(prompt, prompt_lengths)
  cache = init_cache(model.cfg, batch, prompt_len + max_new_tokens)
  logits, cache = model.decode(prompt, segment_ids, positions, cache)
  logits = logits[:, -1, :vocab]
  rows = jnp.arange(batch)
  # Ids in the prompt (padding excluded; `add`, since a pad id may repeat a real one).
  seen = jnp.zeros((batch, vocab), jnp.int32).at[rows[:, None], prompt].add(segment_ids) > 0
  if layout is not None:
    mode_state = constraints.state_after(layout, jnp.where(segment_ids > 0, prompt, 0))
  else:
    mode_state = constraints.initial_state(batch)
  temperature, top_p, penalty = settings.table("temperature"), settings.table("top_p"), settings.table("penalty")
  stops = jnp.asarray(stop_ids or (-1,), jnp.int32)
  out = jnp.zeros((batch, max_new_tokens), jnp.int32)
  done = jnp.zeros((batch,), bool)
  last = jnp.zeros((batch,), jnp.int32)

  def cond(carry):
    step, done = carry[0], carry[5]  # carry[-1]: the params, carried so the loop traces its own
    return (step < max_new_tokens) & ~jnp.all(done)

  def body(carry):
    step, key, logits, cache, mode_state, done, seen, out, last, params = carry
    key, sub = jax.random.split(key)
    if layout is not None:
      allowed = constraints.allowed_ids(layout, mode_state)
    else:
      allowed = jnp.ones((batch, vocab), bool)
    mode = mode_state.mode
    token = choose(sub, logits, allowed, seen, temperature=temperature[mode], top_p=top_p[mode],
                   penalty=penalty[mode])
    token = jnp.where(done, last, token)  # finished rows repeat their stop id
    out = out.at[:, step].set(token)
    stopped = (mode == constraints.TEXT) & jnp.isin(token, stops)
    seen = seen.at[rows, token].set(True)
    if layout is not None:
      mode_state = constraints.advance(layout, mode_state, token)
      if stop_after_media:  # the closing tag of a media block ends the row
        stopped |= (mode != constraints.TEXT) & (mode_state.mode == constraints.TEXT)
    pos = (prompt_lengths + step)[:, None]
    # nnx refuses a module from the outer trace inside the loop: rebuild it from the carried params.
    step_model = nnx.merge(graphdef, params)
    logits, cache = step_model.decode(token[:, None], jnp.ones((batch, 1), jnp.int32), pos, cache)
    return step + 1, key, logits[:, -1, :vocab], cache, mode_state, done | stopped, seen, out, token, params

  carry = (jnp.zeros((), jnp.int32), key, logits, cache, mode_state, done, seen, out, last, state)
  step, *_, done, _, out, last, _ = jax.lax.while_loop(cond, body, carry)
  out = jnp.where(jnp.arange(max_new_tokens)[None, :] >= step, last[:, None], out)  # stopped early
  return out, done
