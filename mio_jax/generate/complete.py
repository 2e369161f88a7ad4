"""One call from prompt ids to the model's continuation, split into text and media code blocks.

    ids, out = complete(model, vocab, build_prompt(vocab, "a red square <image>"), max_new_tokens=258,
                        image_tokens=256)
    out.text, out.images[0]  # "[image 0]", int32 [16, 16]
    ids, out = complete(..., task="image_generation")  # MIO's infer.py settings: 5 beams, penalty 1.15

Sampling or beam search stops at EOS or `<|im_end|>` in text mode; decoding is constrained to MIO's
block layouts (mio_jax.generate.constraints), beams included.
"""

from __future__ import annotations

import jax
import numpy as np

from mio_jax.generate import presets
from mio_jax.generate.beam import beam_search
from mio_jax.generate.constraints import Layout
from mio_jax.generate.decode import Settings, generate
from mio_jax.generate.prompt import Output, split_output, unclosed_block
from mio_jax.vocab import Vocabulary


def complete(model, vocab: Vocabulary, prompt: np.ndarray, *, max_new_tokens: int, image_tokens: int,
             max_speech_frames: int = 0, task: str | None = None, settings: Settings | None = None,
             num_beams: int | None = None, length_penalty: float | None = None, seed: int = 0,
             stop_after_media: bool = False) -> tuple[np.ndarray, Output]:
  """-> (new ids, the continuation as text + media). `task` (presets.TASKS) picks MIO's settings;
  `settings` / `num_beams` / `length_penalty` given override it (none: greedy text, sampled media,
  one beam). Beam search uses the settings' repetition penalties only (per mode), as Hugging Face
  ignores top-p and temperature without sampling. A prompt ending inside an open block (e.g.
  "... <image>") has the generated codes counted as that block's; `stop_after_media` ends generation
  when a media block closes."""
  decoding = presets.resolve(task, settings=settings, num_beams=num_beams, length_penalty=length_penalty)
  s = decoding.settings
  layout = Layout.from_vocab(vocab, image_tokens, max_speech_frames)
  stops = tuple(sorted({vocab.eos, vocab.im_end}))
  if decoding.num_beams > 1:
    ids, _ = beam_search(model, prompt, num_beams=decoding.num_beams, max_new_tokens=max_new_tokens,
                         stop_ids=stops, layout=layout, length_penalty=decoding.length_penalty,
                         repetition_penalty=(s.text_penalty, s.image_penalty, s.speech_penalty),
                         stop_after_media=stop_after_media)
  else:
    rows, _ = generate(model, np.asarray(prompt)[None], key=jax.random.key(seed),
                       max_new_tokens=max_new_tokens, layout=layout, settings=s, stop_ids=stops,
                       stop_after_media=stop_after_media)
    ids = rows[0]
  ids = np.asarray(ids)
  if stop_after_media:  # text mode cannot emit a closing tag: the first one closes the block
    closes = np.flatnonzero(np.isin(ids, (vocab.image_end, vocab.speech_end)))
    ids = ids[:closes[0] + 1] if closes.size else ids
  return ids, split_output(vocab, np.concatenate([unclosed_block(vocab, prompt), ids]), stops)
