"""Modality state machine for constrained decoding, as small int arrays (jit- and batch-friendly).

    text    any text or special id except code ids and the closing tags
            `<image>` -> image, `<spch>` -> speech (in a prompt, a tag followed by text is text)
    image   exactly `image_tokens` image codes, then only `</image>` -> text
    speech  (output layout, L = speech layers) n layer-0 codes, n layer-1 codes, ..., n layer-(L-1)
            codes, then only `</spch>` -> text. n is fixed when the first layer-1 code is drawn
            (there is no separator between the parts); every later part must have exactly n codes.

State per row: mode, layer, count (codes in the current part), n (speech part length, 0 = not yet).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

TEXT, IMAGE, SPEECH = 0, 1, 2
MODES = ("text", "image", "speech")


class State(NamedTuple):
  mode: jax.Array  # [b] int32
  layer: jax.Array
  count: jax.Array
  n: jax.Array


@dataclasses.dataclass(frozen=True)
class Layout:
  """The id ranges the machine needs (hashable: a static argument of the jitted loop)."""
  vocab_size: int
  image_start: int
  image_end: int
  speech_start: int
  speech_end: int
  image_base: int
  image_codes: int
  speech_base: int
  speech_codebook: int
  speech_layers: int
  image_tokens: int  # codes per image block (the image tokenizer's grid, e.g. 256 for 16x16)
  max_speech_frames: int = 0  # n limit per speech part; 0 = unlimited

  @classmethod
  def from_vocab(cls, vocab, image_tokens: int, max_speech_frames: int = 0) -> "Layout":
    if image_tokens < 1:
      raise ValueError(f"image_tokens={image_tokens} must be >= 1")
    return cls(vocab.size, vocab.image_start, vocab.image_end, vocab.speech_start, vocab.speech_end,
               vocab.image_base, vocab.image_codes, vocab.speech_base, vocab.speech_codebook,
               vocab.speech_layers, image_tokens, max_speech_frames)


def initial_state(batch: int) -> State:
  z = jnp.zeros((batch,), jnp.int32)
  return State(z, z, z, z)


def allowed_ids(layout: Layout, state: State) -> jax.Array:
  """Bool [b, vocab]: the ids the model may emit next."""
  ids = jnp.arange(layout.vocab_size)[None, :]
  mode, layer, count, n = (a[:, None] for a in state)
  lo = layout.speech_base + layer * layout.speech_codebook  # this speech layer's range
  in_layer = (ids >= lo) & (ids < lo + layout.speech_codebook)
  in_next = (ids >= lo + layout.speech_codebook) & (ids < lo + 2 * layout.speech_codebook)
  is_image_code = (ids >= layout.image_base) & (ids < layout.image_base + layout.image_codes)
  is_speech_code = (ids >= layout.speech_base) & (
      ids < layout.speech_base + layout.speech_layers * layout.speech_codebook)
  last_layer = layer == layout.speech_layers - 1

  text = ~is_image_code & ~is_speech_code & (ids != layout.image_end) & (ids != layout.speech_end)
  image = jnp.where(count < layout.image_tokens, is_image_code, ids == layout.image_end)
  # Layer 0 (n unknown): more content codes (up to the limit), or once >= 1, the next layer starts.
  under_limit = (count < layout.max_speech_frames) if layout.max_speech_frames else True
  first_part = (in_layer & under_limit) | (in_next & (count >= 1))
  if layout.speech_layers == 1:
    first_part = (in_layer & under_limit) | ((ids == layout.speech_end) & (count >= 1))
  later_part = jnp.where(count < n, in_layer, jnp.where(last_layer, ids == layout.speech_end, in_next))
  speech = jnp.where((layer == 0) & (n == 0), first_part, later_part)
  return jnp.where(mode == TEXT, text, jnp.where(mode == IMAGE, image, speech))


def advance(layout: Layout, state: State, token: jax.Array) -> State:
  """The state after emitting `token` [b] (assumed allowed)."""
  mode, layer, count, n = state
  lo = layout.speech_base + layer * layout.speech_codebook
  next_layer = (token >= lo + layout.speech_codebook) & (token < lo + 2 * layout.speech_codebook)
  zero = jnp.zeros_like(mode)

  text_mode = jnp.where(token == layout.image_start, IMAGE, jnp.where(token == layout.speech_start, SPEECH, TEXT))
  closes = ((mode == IMAGE) & (token == layout.image_end)) | ((mode == SPEECH) & (token == layout.speech_end))
  is_image_code = (token >= layout.image_base) & (token < layout.image_base + layout.image_codes)
  is_speech_code = (token >= layout.speech_base) & (
      token < layout.speech_base + layout.speech_layers * layout.speech_codebook)
  in_block = ((mode == IMAGE) & is_image_code) | ((mode == SPEECH) & is_speech_code)
  # A tag followed by neither codes nor its closing tag was a word of the text: MIO's voice-mode
  # system prompt says "starting with <spch> and ending with </spch>" and its Instruct TTS prompt
  # "Start with <spch>." (tokenization_mio.py, infer.py), the tags' ids as in MIO. Such a token is
  # read in text mode. Only prompts do this: in a block, generation is allowed codes and the close.
  new_mode = jnp.where(closes, TEXT, jnp.where(in_block, mode, text_mode))
  speech_step = in_block & (mode == SPEECH) & next_layer
  new_layer = jnp.where(in_block, layer + speech_step, zero)
  new_count = jnp.where(in_block, jnp.where(speech_step, 1, count + 1), zero)
  new_n = jnp.where(in_block, jnp.where(speech_step & (layer == 0), count, n), zero)
  return State(new_mode, new_layer.astype(jnp.int32), new_count.astype(jnp.int32), new_n.astype(jnp.int32))


def state_after(layout: Layout, tokens: jax.Array) -> State:
  """The state after a prompt [b, t] (left padding with a non-tag id, e.g. 0, is harmless)."""
  def step(state, token):
    return advance(layout, state, token), None
  state, _ = jax.lax.scan(step, initial_state(tokens.shape[0]), tokens.T)
  return state
