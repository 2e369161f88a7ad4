"""Prompt ids from text plus media code blocks, and generated ids back to text plus media codes.

Prompt text may name MIO's special tokens literally (`<image>`, `</image>`, `<spch>`, `</spch>`,
`[IMG]`, `[SPCH]`, and `<|im_start|>` / `<|im_end|>` / BOS / EOS) and the placeholders `{image}` /
`{speech}`, where the given image codes (an [h, w] grid, as an image block) and speech codes
([layers, frames], content layer only, as an input block) go. Media given without a placeholder is
put before the text. A prompt that ends with `<image>` or `<spch>` asks for that modality next.
Text is kept verbatim (spaces and newlines included) and encoded by the rule training samples use
(mio_jax/data/text_runs.py), so a template's prompt (data.templates.prompt_text) gives the ids
training saw; e.g. MIO's "{image} The caption of this image is".
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from mio_jax.data.text_runs import encode_segments
from mio_jax.vocab import Vocabulary

_PLACEHOLDERS = ("{image}", "{speech}")
_SPLIT = re.compile("(" + "|".join(re.escape(t) for t in _PLACEHOLDERS) + ")")


def build_prompt(vocab: Vocabulary, text: str, *, image_codes=None, speech_codes=None,
                 bos: bool = True) -> np.ndarray:
  blocks = {"{image}": None if image_codes is None else vocab.image_ids(image_codes),
            "{speech}": None if speech_codes is None else vocab.speech_ids(speech_codes, output=False)}
  segments = [([vocab.bos], 0.0)] if bos else []
  for name, block in blocks.items():
    if block is not None and name not in text:
      segments.append((block, 0.0))
  for part in _SPLIT.split(text):
    if part in _PLACEHOLDERS:
      if blocks[part] is None:
        raise ValueError(f"prompt uses {part} but no --{part[1:-1]}_codes file was given")
      segments.append((blocks[part], 0.0))
    else:
      segments.append((part, 0.0))
  return encode_segments(vocab, segments)[0]


@dataclasses.dataclass
class Output:
  text: str  # text with each media block shown as a placeholder like [image 0] / [speech 0]
  images: list  # int32 code arrays, [h, w] when the count is a square, else flat
  speech: list  # int32 [layers, frames]; flat ids' codes when the parts are unequal (truncated)
  complete: list  # per media block in order: (kind, index, closed by its end tag)


def split_output(vocab: Vocabulary, ids, stop_ids=()) -> Output:
  """Generated ids (up to the first stop id in text) as text and media code arrays."""
  ids = [int(i) for i in ids]
  text, run, out = [], [], Output("", [], [], [])
  k = 0

  def flush():
    if run:
      text.append(vocab.decode(run))
      run.clear()

  while k < len(ids):
    i = ids[k]
    if i in stop_ids:
      break
    if i in (vocab.image_start, vocab.speech_start):
      flush()
      end = vocab.image_end if i == vocab.image_start else vocab.speech_end
      j = k + 1
      while j < len(ids) and ids[j] != end:
        j += 1
      body = ids[k + 1:j]
      if i == vocab.image_start:
        codes = np.asarray([vocab.code_of(c)[2] for c in body], np.int32)
        side = int(round(np.sqrt(codes.size)))
        out.images.append(codes.reshape(side, side) if side * side == codes.size and side else codes)
        text.append(f"[image {len(out.images) - 1}]")
        out.complete.append(("image", len(out.images) - 1, j < len(ids)))
      else:
        try:
          codes = vocab.speech_codes(body).astype(np.int32)
        except ValueError:
          codes = np.asarray([vocab.code_of(c)[2] for c in body], np.int32)
        out.speech.append(codes)
        text.append(f"[speech {len(out.speech) - 1}]")
        out.complete.append(("speech", len(out.speech) - 1, j < len(ids)))
      k = j + 1
      continue
    run.append(i)
    k += 1
  flush()
  out.text = "".join(text)
  return out


def unclosed_block(vocab: Vocabulary, prompt) -> np.ndarray:
  """The tail of `prompt` from an opening tag that is not closed (empty if none)."""
  prompt = np.asarray(prompt)
  for k in range(len(prompt) - 1, -1, -1):
    if prompt[k] in (vocab.image_end, vocab.speech_end):
      break
    if prompt[k] in (vocab.image_start, vocab.speech_start):
      return prompt[k:].astype(np.int32)
  return np.zeros((0,), np.int32)
