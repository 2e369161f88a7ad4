"""MIO's sample templates (stages 1-3) and ChatML (stage 4): a shard Sample -> token ids + loss weights.

Each sample becomes `[BOS] body [EOS]` (ChatML samples end at their last `<|im_end|>`). The weight of a
token says whether predicting it counts in the loss: every token in stages 1-3 ("all"); in stage 4
("assistant") only the content and closing `<|im_end|>` of assistant turns of conversations
(other kinds keep "all"). The pipeline turns weights into per-position loss masks.

Two template sets (config.data.template_set): "mio_release", the default, reproduces the prompts of
MIO's released code (github MIO-Team/MIO, infer.py and tokenization_mio.py): LaTeX quotes, no colon
after "is"; "paper" keeps the wording the paper gives (straight quotes, colons, "Transcribe this
speech:" in stages 1-2). Text and media become ids by the one rule of text_runs.py (text kept
verbatim, literal special tokens as their ids), which generation prompts share.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from mio_jax.data.shards import Sample
from mio_jax.data.text_runs import encode_segments
from mio_jax.vocab import Vocabulary


@dataclasses.dataclass(frozen=True)
class Template:
  """A pair sample is `prompt + answer`; `prompt` is where MIO's inference prompt for the task ends.
  A generation prompt also takes the answer's text up to the media's opening tag (`prompt_only`)."""
  prompt: str
  answer: str


# MIO's released code, quoted: infer.py builds the Base prompts
#   "<image_placeholder_0>" + " The caption of this image is"
#   "Please generate an image of ``a beautiful sunset over the ocean''"
#   "<speech_placeholder_0>" + " The transcription of this speech is"
#   "Please generate a speech of ``Mister Morton replied ...'': <spch>"
#   "Please describe the following video: " + "<image_placeholder_0>..."
#   "Please generate a video for ``Bird eye panoramic view ...'': <image>"
# What follows each prompt in training is not released. Text answers continue with a space (the
# paper's `{image} ... {caption}`); the image follows its prompt directly, so that infer.py's prompt,
# which ends at the closing quotes, is a prefix of the samples' ids (with ": " between, BPE may
# merge "'':" into a piece that the prompt's "''" does not give).
MIO_RELEASE_TEMPLATES = {
    "image_caption": Template("{image} The caption of this image is", " {caption}"),
    "image_generation": Template("Please generate an image of ``{caption}''", "{image}"),
    "video_caption": Template("Please describe the following video: {video}", " {description}"),
    "video_generation": Template("Please generate a video for ``{description}'': ", "{video}"),
    "speech_asr": Template("{speech} The transcription of this speech is", " {transcription}"),
    "speech_tts": Template("Please generate a speech of ``{transcription}'': ", "{speech}"),
}
# The paper's wording (appendix; MIO_FACTS.md "Training"); stage 3 has its own ASR template.
PAPER_TEMPLATES = {
    "image_caption": Template("{image} The caption of this image is:", " {caption}"),
    "image_generation": Template('Please generate an image of "{caption}": ', "{image}"),
    "video_caption": Template("Please describe the following video: {video}", " {description}"),
    "video_generation": Template('Please generate a video for "{description}": ', "{video}"),
    "speech_asr": Template("{speech} Transcribe this speech:", " {transcription}"),
    "speech_asr_stage3": Template("{speech} The transcription of this speech is:", " {transcription}"),
    "speech_tts": Template('Please generate a speech of "{transcription}": ', "{speech}"),
}
TEMPLATE_SETS = {"mio_release": MIO_RELEASE_TEMPLATES, "paper": PAPER_TEMPLATES}
DEFAULT_TEMPLATE_SET = "mio_release"

# tokenization_mio.py: MIO_STD_MODE_SYSTEM and MIO_VOICE_MODE_SYSTEM (apply_chat_template's mode
# "std" / "voice"); MIO_CHAT_TEMPLATE: "<|im_start|>{role}\n{content}<|im_end|>" turns joined by "\n".
DEFAULT_SYSTEM_PROMPT = ("You are MIO, an AI assistant capable of understanding and generating "
                         "images, text, videos, and speech, selecting the appropriate modality "
                         "according to the context.")
VOICE_SYSTEM_PROMPT = ("You are MIO, an AI assistant capable of understanding images, text, videos, "
                       "and speech, and generating speech. Please respond to the user with speech "
                       "only, starting with <spch> and ending with </spch>.")
CHAT_MODES = ("std", "voice")
LOSS_MODES = ("all", "assistant")
_MEDIA_SLOT = re.compile(r"\{(image|video|speech)\}")
_OPENING = {"image": "<image>", "video": "<image>", "speech": "<spch>"}


@dataclasses.dataclass(frozen=True)
class TemplateOptions:
  stage: int = 1
  loss_mask: str = "all"
  image_generation_prob: float = 0.5  # image-text pairs: image or text first at random
  video_generation_prob: float = 0.6  # video pairs: 60% text-to-video, 40% video-to-text
  speech_generation_prob: float = 0.5  # speech pairs: TTS vs ASR (ratio unverified)
  system_prompt: str = DEFAULT_SYSTEM_PROMPT
  # Conversations in voice mode (every assistant turn is speech only, or meta "chat_mode": "voice")
  # get this system prompt; "" keeps system_prompt for them.
  voice_system_prompt: str = VOICE_SYSTEM_PROMPT
  template_set: str = DEFAULT_TEMPLATE_SET
  add_bos: bool = True
  add_eos: bool = True

  def __post_init__(self):
    if self.loss_mask not in LOSS_MODES:
      raise ValueError(f"config.data.loss_mask={self.loss_mask!r} is not one of {LOSS_MODES}")
    if self.template_set not in TEMPLATE_SETS:
      raise ValueError(f"config.data.template_set={self.template_set!r} is not one of {tuple(TEMPLATE_SETS)}")


def pair_template(name: str, template_set: str = DEFAULT_TEMPLATE_SET, stage: int = 1) -> Template:
  """Task `name` (a key of MIO_RELEASE_TEMPLATES) in a template set; the paper's ASR depends on the stage."""
  if template_set not in TEMPLATE_SETS:
    raise ValueError(f"template set {template_set!r} is not one of {tuple(TEMPLATE_SETS)}")
  templates = TEMPLATE_SETS[template_set]
  return templates.get(f"{name}_stage3", templates[name]) if stage == 3 else templates[name]


def prompt_text(name: str, template_set: str = DEFAULT_TEMPLATE_SET, stage: int = 1, **fields: str) -> str:
  """A task's generation prompt as text for generate.prompt.build_prompt: input media stay as the
  placeholders `{image}` / `{speech}` (a video input as `{image}`: build_prompt takes one grid), and
  an answer that is media ends the prompt with its opening tag (`<image>` / `<spch>`)."""
  t = pair_template(name, template_set, stage)
  fields = {k: v.strip() for k, v in fields.items()}
  slots = {"image": "{image}", "video": "{image}", "speech": "{speech}"}
  out = t.prompt.format(**fields, **slots)
  answer = _MEDIA_SLOT.split(t.answer)
  if len(answer) > 1:
    out += answer[0].format(**fields) + _OPENING[answer[1]]
  return out


def chatml_text(turns: list[tuple[str, str]], *, mode: str = "std", system_prompt: str | None = None,
                add_generation_prompt: bool = True) -> str:
  """MIO's apply_chat_template string (tokenization_mio.py) for [(role, content)]: a system turn
  (`mode` "std" / "voice", or `system_prompt`), turns joined by "\n", then "<|im_start|>assistant\n"."""
  if mode not in CHAT_MODES:
    raise ValueError(f"chat mode {mode!r} is not one of {CHAT_MODES}")
  system = system_prompt if system_prompt is not None else (
      VOICE_SYSTEM_PROMPT if mode == "voice" else DEFAULT_SYSTEM_PROMPT)
  rows = [f"<|im_start|>system\n{system}<|im_end|>"]
  rows += [f"<|im_start|>{role}\n{content}<|im_end|>" for role, content in turns if role != "system"]
  return "\n".join(rows) + ("\n<|im_start|>assistant\n" if add_generation_prompt else "")


class _Builder:
  """Collects (text or ids, weight) segments; text_runs.encode_segments makes the ids."""

  def __init__(self, vocab: Vocabulary):
    self.vocab, self.segments = vocab, []

  def add(self, ids, weight: float) -> None:
    self.segments.append((np.asarray(ids, dtype=np.int32).ravel(), weight))

  def text(self, text: str, weight: float) -> None:
    self.segments.append((text, weight))

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
             stop_at_media: bool = False, **fields: str) -> None:
    """Template text with its fields; the media slot gets the media block, or with stop_at_media
    only its opening tag, and nothing after it."""
    for j, piece in enumerate(_MEDIA_SLOT.split(template)):
      if j % 2 == 0:
        self.text(piece.format(**fields), weight)
      elif stop_at_media:
        self.add([self.vocab.special_ids[_OPENING[piece]]], weight)
        return
      else:
        self.media(media, weight, speech_output=speech_output)

  def result(self) -> tuple[np.ndarray, np.ndarray]:
    return encode_segments(self.vocab, self.segments)


def media_and_text(sample: Sample, media_type: str, where: str = "sample") -> tuple[dict, str]:
  """A pair sample's one media part and its text parts joined by spaces."""
  media = [p for p in sample.parts if p["type"] == media_type]
  texts = [p["text"] for p in sample.parts if p["type"] == "text"]
  if len(media) != 1 or not texts:
    raise ValueError(f"{where}: a {sample.kind} sample needs one {media_type} part and text, got "
                     f"{[p['type'] for p in sample.parts]}")
  return media[0], " ".join(texts)


def build_tokens(sample: Sample, vocab: Vocabulary, rng: np.random.Generator,
                 opts: TemplateOptions, where: str = "sample", *,
                 prompt_only: bool = False) -> tuple[np.ndarray, np.ndarray]:
  """Token ids [n] int32 and loss weights [n] float32 (weight of predicting each token).

  prompt_only (pair kinds): BOS and the template's prompt, plus, when the answer is media, the text
  before it and its opening tag -- what a generation or evaluation prompt for the sample is."""
  b = _Builder(vocab)
  if opts.add_bos:
    b.add([vocab.bos], 0.0)
  kind = sample.kind
  if kind == "conversation":
    _chatml(b, sample, opts)
    return b.result()
  if kind in ("interleaved", "text"):
    for part in sample.parts:  # speech inside documents is input (content codes only)
      b.media(part, 1.0, speech_output=False)
  elif kind in _PAIRS:
    media_type, field, generation_prob, generation, understanding = _PAIRS[kind]
    media, text = media_and_text(sample, media_type, where)
    generate = rng.random() < getattr(opts, generation_prob)
    t = pair_template(generation if generate else understanding, opts.template_set, opts.stage)
    fields = {field: text.strip()}
    speech_output = generate and media_type == "speech"
    b.render(t.prompt, media, 1.0, speech_output=speech_output, **fields)
    if prompt_only:
      if _MEDIA_SLOT.search(t.answer):
        b.render(t.answer, media, 1.0, stop_at_media=True, **fields)
      return b.result()
    b.render(t.answer, media, 1.0, speech_output=speech_output, **fields)
  else:
    raise ValueError(f"{where}: unknown sample kind {kind!r}")
  if prompt_only:
    raise ValueError(f"{where}: a {kind} sample has no prompt (only pair kinds do)")
  if opts.add_eos:
    b.add([vocab.eos], 1.0)
  return b.result()


# kind -> (media type, text field, direction option, generation task, understanding task)
_PAIRS = {
    "image_text": ("image", "caption", "image_generation_prob", "image_generation", "image_caption"),
    "video_text": ("video", "description", "video_generation_prob", "video_generation", "video_caption"),
    "speech_text": ("speech", "transcription", "speech_generation_prob", "speech_tts", "speech_asr"),
}


def chat_mode(sample: Sample) -> str:
  """"voice" when the sample's meta says so, or (no "chat_mode" in meta) when it has assistant turns
  and every one of them is speech only: MIO answers those in its voice mode (tokenization_mio.py)."""
  if "chat_mode" in sample.meta:
    mode = sample.meta["chat_mode"]
    if mode not in CHAT_MODES:
      raise ValueError(f"{sample.source}: meta chat_mode={mode!r} is not one of {CHAT_MODES}")
    return mode
  answers = [p for p in sample.parts if p.get("role", "user") == "assistant"]
  return "voice" if answers and all(p["type"] == "speech" for p in answers) else "std"


def _chatml(b: _Builder, sample: Sample, opts: TemplateOptions) -> None:
  """`<|im_start|>role\ncontent<|im_end|>` turns joined by "\n" (tokenization_mio.py
  MIO_CHAT_TEMPLATE); consecutive parts of one role are a turn, and inside a turn a text part and a
  media part are separated by "\n" (infer.py: "Please transcribe this speech.\n<spch>...") unless
  the text already has whitespace there. The markers are ids; the text between them is one run."""
  vocab = b.vocab
  turns: list[tuple[str, list[dict]]] = []
  for part in sample.parts:
    role = part.get("role", "user")
    if turns and turns[-1][0] == role:
      turns[-1][1].append(part)
    else:
      turns.append((role, [part]))
  system = opts.voice_system_prompt if opts.voice_system_prompt and chat_mode(sample) == "voice" \
      else opts.system_prompt
  if system and (not turns or turns[0][0] != "system"):
    turns.insert(0, ("system", [{"type": "text", "text": system}]))
  header = 0.0 if opts.loss_mask == "assistant" else 1.0
  for t, (role, parts) in enumerate(turns):
    train = 1.0 if opts.loss_mask == "all" or role == "assistant" else 0.0
    if t:
      b.text("\n", header)  # the separator after the previous <|im_end|>
    b.add(vocab.im_start_ids, header)
    b.text(role + "\n", header)
    for k, part in enumerate(parts):
      if k and _needs_newline(parts[k - 1], part):
        b.text("\n", train)
      b.media(part, train, speech_output=role == "assistant")  # speech the assistant says: output
    b.add([vocab.im_end], train)


def _needs_newline(before: dict, after: dict) -> bool:
  if (before["type"] == "text") == (after["type"] == "text"):
    return False
  text = before["text"][-1:] if before["type"] == "text" else after["text"][:1]
  return not text.isspace() and text != ""
