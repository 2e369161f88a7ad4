"""MIO's sample templates (stages 1-3) and ChatML (stage 4): a shard Sample -> token ids + loss weights.

Each sample becomes `[BOS] body [EOS]` (ChatML samples end at their last `<|im_end|>`). The weight of a
token says whether predicting it counts in the loss: every token in stages 1-3 ("all"); in stage 4
("assistant") only the content and closing `<|im_end|>` of assistant turns of conversations
(other kinds keep "all"). The pipeline turns weights into per-position loss masks.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from mio_jax.data.shards import Sample
from mio_jax.vocab import Vocabulary

TEMPLATES = {
    "image_caption": "{image} The caption of this image is: {caption}",
    "image_generation": 'Please generate an image of "{caption}": {image}',
    "video_caption": "Please describe the following video: {video} {description}",
    "video_generation": 'Please generate a video for "{description}": {video}',
    "speech_asr": "{speech} Transcribe this speech: {transcription}",
    "speech_asr_stage3": "{speech} The transcription of this speech is: {transcription}",
    "speech_tts": 'Please generate a speech of "{transcription}": {speech}',
}
# MIO's fixed SFT system prompt is not published verbatim (unverified); config overrides it.
DEFAULT_SYSTEM_PROMPT = ("You are MIO, an AI assistant capable of understanding and generating "
                         "images, text, videos, and speech, selecting the appropriate modality "
                         "according to the context.")
LOSS_MODES = ("all", "assistant")
_MEDIA_SLOT = re.compile(r"\{(image|video|speech)\}")


@dataclasses.dataclass(frozen=True)
class TemplateOptions:
  stage: int = 1
  loss_mask: str = "all"
  image_generation_prob: float = 0.5  # image-text pairs: image or text first at random
  video_generation_prob: float = 0.6  # video pairs: 60% text-to-video, 40% video-to-text
  speech_generation_prob: float = 0.5  # speech pairs: TTS vs ASR (ratio unverified)
  system_prompt: str = DEFAULT_SYSTEM_PROMPT
  add_bos: bool = True
  add_eos: bool = True

  def __post_init__(self):
    if self.loss_mask not in LOSS_MODES:
      raise ValueError(f"config.data.loss_mask={self.loss_mask!r} is not one of {LOSS_MODES}")


class _Builder:
  """Accumulates ids and per-token loss weights."""

  def __init__(self, vocab: Vocabulary):
    self.vocab, self.ids, self.weights = vocab, [], []

  def add(self, ids, weight: float) -> None:
    ids = np.asarray(ids, dtype=np.int32).ravel()
    self.ids.append(ids)
    self.weights.append(np.full(ids.shape, weight, np.float32))

  def text(self, text: str, weight: float, *, strip: bool = True) -> None:
    text = text.strip() if strip else text
    if text:
      self.add(self.vocab.encode_text(text), weight)

  def media(self, part: dict, weight: float, *, speech_output: bool) -> None:
    if part["type"] == "image":
      self.add(self.vocab.image_ids(part["codes"]), weight)
    elif part["type"] == "video":
      self.add(self.vocab.video_ids(part["codes"]), weight)
    elif part["type"] == "speech":
      self.add(self.vocab.speech_ids(part["codes"], output=speech_output), weight)
    else:
      self.text(part["text"], weight)

  def render(self, template: str, media: dict, weight: float, *, speech_output: bool = False,
             **fields: str) -> None:
    for j, piece in enumerate(_MEDIA_SLOT.split(template)):
      if j % 2:
        self.media(media, weight, speech_output=speech_output)
      else:
        self.text(piece.format(**fields), weight)

  def result(self) -> tuple[np.ndarray, np.ndarray]:
    if not self.ids:
      return np.zeros(0, np.int32), np.zeros(0, np.float32)
    return np.concatenate(self.ids), np.concatenate(self.weights)


def media_and_text(sample: Sample, media_type: str, where: str = "sample") -> tuple[dict, str]:
  """A pair sample's one media part and its text parts joined by spaces."""
  media = [p for p in sample.parts if p["type"] == media_type]
  texts = [p["text"] for p in sample.parts if p["type"] == "text"]
  if len(media) != 1 or not texts:
    raise ValueError(f"{where}: a {sample.kind} sample needs one {media_type} part and text, got "
                     f"{[p['type'] for p in sample.parts]}")
  return media[0], " ".join(texts)


def build_tokens(sample: Sample, vocab: Vocabulary, rng: np.random.Generator,
                 opts: TemplateOptions, where: str = "sample") -> tuple[np.ndarray, np.ndarray]:
  """Token ids [n] int32 and loss weights [n] float32 (weight of predicting each token)."""
  b = _Builder(vocab)
  if opts.add_bos:
    b.add([vocab.bos], 0.0)
  kind = sample.kind
  if kind == "conversation":
    _chatml(b, sample, opts)
  else:
    if kind == "image_text":
      image, caption = media_and_text(sample, "image", where)
      name = "image_generation" if rng.random() < opts.image_generation_prob else "image_caption"
      b.render(TEMPLATES[name], image, 1.0, caption=caption)
    elif kind == "video_text":
      video, text = media_and_text(sample, "video", where)
      name = "video_generation" if rng.random() < opts.video_generation_prob else "video_caption"
      b.render(TEMPLATES[name], video, 1.0, description=text)
    elif kind == "speech_text":
      speech, text = media_and_text(sample, "speech", where)
      if rng.random() < opts.speech_generation_prob:
        b.render(TEMPLATES["speech_tts"], speech, 1.0, speech_output=True, transcription=text)
      else:
        name = "speech_asr_stage3" if opts.stage == 3 else "speech_asr"
        b.render(TEMPLATES[name], speech, 1.0, transcription=text)
    elif kind in ("interleaved", "text"):
      for part in sample.parts:  # speech inside documents is input (content codes only)
        b.media(part, 1.0, speech_output=False)
    else:
      raise ValueError(f"{where}: unknown sample kind {kind!r}")
    if opts.add_eos:
      b.add([vocab.eos], 1.0)
  return b.result()


def _chatml(b: _Builder, sample: Sample, opts: TemplateOptions) -> None:
  """`<|im_start|>role\\n content <|im_end|>` turns joined by `\\n`; consecutive parts of one role
  are a turn. Each text run is encoded on its own (SentencePiece's dummy prefix applies per run)."""
  vocab = b.vocab
  turns: list[tuple[str, list[dict]]] = []
  for part in sample.parts:
    role = part.get("role", "user")
    if turns and turns[-1][0] == role:
      turns[-1][1].append(part)
    else:
      turns.append((role, [part]))
  if opts.system_prompt and (not turns or turns[0][0] != "system"):
    turns.insert(0, ("system", [{"type": "text", "text": opts.system_prompt}]))
  header = 0.0 if opts.loss_mask == "assistant" else 1.0
  for t, (role, parts) in enumerate(turns):
    train = 1.0 if opts.loss_mask == "all" or role == "assistant" else 0.0
    if t:
      b.text("\n", header, strip=False)  # the newline after the previous <|im_end|>
    b.add(vocab.im_start_ids, header)
    b.text(role + "\n", header, strip=False)
    for part in parts:  # speech the assistant says is output speech: content + timbre layers
      b.media(part, train, speech_output=role == "assistant")
    b.add([vocab.im_end], train)
