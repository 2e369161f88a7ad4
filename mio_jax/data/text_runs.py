"""The one rule that turns text and media into ids, shared by training samples (templates.py) and
generation prompts (mio_jax/generate/prompt.py), so a prompt is exactly what training saw.

MIO (tokenization_mio.py) writes a whole sample as ONE string, media as their token strings
("<image><img1>...</image>"), and tokenizes it with its Hugging Face tokenizer (Yi's SentencePiece,
add_dummy_prefix=False; the specials and codes are added tokens that split the string and keep the
whitespace around them). The equivalent here: a sequence is a list of segments, text or id blocks;
adjacent text segments are joined into one run, each run is split at special-token strings (their
ids) and the pieces between are encoded verbatim (Vocabulary.encode_text: no stripping, no dummy
prefix). So " The caption of this image is" after `</image>` starts with "▁The", "\\n" before
`<spch>` stays, and "Please ..." right after BOS has no leading "▁" -- as in MIO's ids.

Segments carry a loss weight. When one run joins segments of different weights (ChatML's
"assistant\\n" header and the answer that follows), the tokens are split where encoding the run's
text up to the boundary stops agreeing with encoding the whole run; a token that straddles the
boundary takes the later segment's weight.
"""

from __future__ import annotations

import numpy as np

from mio_jax.vocab import Vocabulary


def encode_segments(vocab: Vocabulary, segments) -> tuple[np.ndarray, np.ndarray]:
  """[(text or ids, weight), ...] -> token ids [n] int32 and per-token weights [n] float32."""
  ids: list[np.ndarray] = []
  weights: list[np.ndarray] = []
  run: list[tuple[str, float]] = []

  def flush():
    if run:
      t, w = _encode_run(vocab, run)
      ids.append(t)
      weights.append(w)
      run.clear()

  for value, weight in segments:
    if isinstance(value, str):
      if value:
        run.append((value, float(weight)))
      continue
    flush()
    block = np.asarray(value, np.int32).ravel()
    ids.append(block)
    weights.append(np.full(block.shape, weight, np.float32))
  flush()
  if not ids:
    return np.zeros(0, np.int32), np.zeros(0, np.float32)
  return np.concatenate(ids).astype(np.int32), np.concatenate(weights).astype(np.float32)


def _encode_run(vocab: Vocabulary, run: list[tuple[str, float]]) -> tuple[np.ndarray, np.ndarray]:
  ids = np.asarray(vocab.encode_with_specials("".join(t for t, _ in run)), np.int32)
  weights = np.empty(ids.shape, np.float32)
  start, prefix = 0, ""
  for k in range(len(run) - 1):
    prefix += run[k][0]
    if run[k][1] == run[k + 1][1]:
      continue  # the same weight on both sides: no boundary to place
    head = vocab.encode_with_specials(prefix)
    n = 0
    while n < min(len(head), len(ids)) and head[n] == ids[n]:
      n += 1
    n = max(n, start)
    weights[start:n] = run[k][1]
    start = n
  weights[start:] = run[-1][1]
  return ids, weights
