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
  # int32 [layers, frames] (an input block, content codes only: [1, frames]); a block cut off by
  # max_new_tokens: flat speech numbers layer * codebook + code (MIO's <spch{k}>), in order
  speech: list
  complete: list  # per media block in order: (kind, index, closed by its end tag)


def split_output(vocab: Vocabulary, ids, stop_ids=()) -> Output:
  """Generated ids (up to the first stop id in text) as text and media code arrays.

  Blocks are checked, speech as MIO's tokenization_mio.check_speech_completeness does: a malformed
  block raises ValueError naming it (see speech_block). A block without its closing tag (cut off by
  max_new_tokens) is not an error: it is reported with closed=False in `complete`.
  """
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
      body, closed = ids[k + 1:j], j < len(ids)
      if i == vocab.image_start:
        codes = np.asarray(_codes(vocab, body, "image", f"image block {len(out.images)}"), np.int32)
        side = int(round(np.sqrt(codes.size)))
        out.images.append(codes.reshape(side, side) if side * side == codes.size and side else codes)
        text.append(f"[image {len(out.images) - 1}]")
        out.complete.append(("image", len(out.images) - 1, closed))
      else:
        out.speech.append(speech_block(vocab, body, closed, f"speech block {len(out.speech)}"))
        text.append(f"[speech {len(out.speech) - 1}]")
        out.complete.append(("speech", len(out.speech) - 1, closed))
      k = j + 1
      continue
    run.append(i)
    k += 1
  flush()
  out.text = "".join(text)
  return out


def _codes(vocab: Vocabulary, body, modality: str, where: str) -> list:
  """(layer, code) of each id of a block body, all of `modality` (else ValueError naming `where`)."""
  out = []
  for pos, i in enumerate(body):
    try:
      kind, layer, code = vocab.code_of(i)
    except ValueError:
      kind = None
    if kind != modality:
      article = "an" if modality == "image" else "a"
      raise ValueError(f"{where}: id {i} at position {pos} is not {article} {modality} code")
    out.append(code if modality == "image" else (layer, code))
  return out


def speech_block(vocab: Vocabulary, body, closed: bool, where: str = "speech block") -> np.ndarray:
  """A speech block's codes, checked as MIO's check_speech_completeness (tokenization_mio.py):
  consecutive parts of one layer each must come in layer order 0, 1, ..., L-1 with equal lengths
  ("Must have exactly four parts", "Parts are not in the correct order", "Each part must have the
  same number of tokens"). Closed: all L parts -> [L, frames], or content codes only (an input
  block, as prompts hold them) -> [1, frames]. Not closed (cut off): the parts so far must be in
  order, the finished ones of equal length, the last no longer -> flat layer * codebook + code."""
  codes = _codes(vocab, body, "speech", where)
  parts: list = []  # [layer, count] per run of one layer
  for layer, _ in codes:
    if parts and parts[-1][0] == layer:
      parts[-1][1] += 1
    else:
      parts.append([layer, 1])
  layers, counts = [p[0] for p in parts], [p[1] for p in parts]
  if layers != list(range(len(parts))):
    raise ValueError(f"{where}: speech layers out of order: parts are layers {layers} with {counts} codes, "
                     f"expected layers 0..{vocab.speech_layers - 1} in order")
  if not closed:
    if any(c != counts[0] for c in counts[1:-1]) or (len(counts) > 1 and counts[-1] > counts[0]):
      raise ValueError(f"{where}: speech layer parts of unequal length {counts} (cut off)")
    return np.asarray([layer * vocab.speech_codebook + code for layer, code in codes], np.int32)
  if not parts:
    raise ValueError(f"{where}: no speech codes between <spch> and </spch>")
  if len(parts) == 1:
    return np.asarray([[code for _, code in codes]], np.int32)
  if len(parts) != vocab.speech_layers:
    raise ValueError(f"{where}: {len(parts)} speech layer parts with {counts} codes, expected "
                     f"{vocab.speech_layers} (content, then the timbre layers) or content only")
  if len(set(counts)) != 1:
    raise ValueError(f"{where}: speech layer parts of unequal length {counts}, expected equal")
  return np.asarray([[code for _, code in codes[p * counts[0]:(p + 1) * counts[0]]]
                     for p in range(len(parts))], np.int32)


def unclosed_block(vocab: Vocabulary, prompt) -> np.ndarray:
  """The tail of `prompt` from an opening tag that is not closed (empty if none). A tag followed by
  anything but its block's codes is a word of the text, as constraints.advance reads it (MIO's
  voice-mode prompt: "... starting with <spch> and ending with </spch>", "Start with <spch>.")."""
  prompt = np.asarray(prompt)
  for k in range(len(prompt) - 1, -1, -1):
    if prompt[k] in (vocab.image_end, vocab.speech_end):
      break
    if prompt[k] in (vocab.image_start, vocab.speech_start):
      modality = "image" if prompt[k] == vocab.image_start else "speech"
      if all(_code_kind(vocab, i) == modality for i in prompt[k + 1:]):
        return prompt[k:].astype(np.int32)
      break
  return np.zeros((0,), np.int32)


def _code_kind(vocab: Vocabulary, i) -> str | None:
  try:
    return vocab.code_of(int(i))[0]
  except ValueError:
    return None
