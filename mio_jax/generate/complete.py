"""One call from prompt ids to the model's continuation, split into text and media code blocks.

    ids, out = complete(model, vocab, build_prompt(vocab, "a red square <image>"), max_new_tokens=258,
                        image_tokens=256)
    out.text, out.images[0]  # "[image 0]", int32 [16, 16]

Sampling (or beam search for text) stops at EOS or `<|im_end|>` in text mode; decoding is constrained
to MIO's block layouts (mio_jax.generate.constraints).
"""

from __future__ import annotations

import jax
import numpy as np

from mio_jax.generate.beam import beam_search
from mio_jax.generate.constraints import Layout
from mio_jax.generate.decode import Settings, generate
from mio_jax.generate.prompt import Output, split_output, unclosed_block
from mio_jax.vocab import Vocabulary


def complete(model, vocab: Vocabulary, prompt: np.ndarray, *, max_new_tokens: int, image_tokens: int,
             max_speech_frames: int = 0, settings: Settings = Settings(), num_beams: int = 1,
             length_penalty: float = 1.0, seed: int = 0,
             stop_after_media: bool = False) -> tuple[np.ndarray, Output]:
  """-> (new ids, the continuation as text + media). A prompt ending inside an open block
  (e.g. "... <image>") has the generated codes counted as that block's; `stop_after_media` ends
  generation when a media block closes."""
  layout = Layout.from_vocab(vocab, image_tokens, max_speech_frames)
  stops = tuple(sorted({vocab.eos, vocab.im_end}))
  open_block = unclosed_block(vocab, prompt)
  if num_beams > 1:
    if len(open_block):
      raise ValueError("num_beams > 1 decodes text only; the prompt ends inside an <image>/<spch> block")
    ids, _ = beam_search(model, prompt, num_beams=num_beams, max_new_tokens=max_new_tokens,
                         stop_ids=stops, layout=layout, length_penalty=length_penalty)
  else:
    rows, _ = generate(model, np.asarray(prompt)[None], key=jax.random.key(seed),
                       max_new_tokens=max_new_tokens, layout=layout, settings=settings, stop_ids=stops,
                       stop_after_media=stop_after_media)
    ids = rows[0]
  ids = np.asarray(ids)
  if stop_after_media:  # text mode cannot emit a closing tag: the first one closes the block
    closes = np.flatnonzero(np.isin(ids, (vocab.image_end, vocab.speech_end)))
    ids = ids[:closes[0] + 1] if closes.size else ids
  return ids, split_output(vocab, np.concatenate([open_block, ids]), stops)
