"""The "mio_release" template set against MIO's released code (github MIO-Team/MIO), id for id.

The oracle tokenizes MIO's strings the way tokenization_mio.py does: the prompt text with media
replaced by their token strings ("<image><img1>...</image>", "<spch><spch5>...</spch>"), BOS
prepended as a string (MIOTokenizer.__call__), then one call of a slow SentencePiece tokenizer
(MIO: LlamaTokenizer over Yi's model, transformers 4.34 per its requirements.txt, legacy mode) whose
added tokens are the six specials and the code strings. Here the model is a tiny Yi-like BPE
(add_dummy_prefix=False, identity normalisation, byte fallback, <|im_start|> 6 and <|im_end|> 7)
trained in the test, and the tokenizer is transformers' SentencePieceBackend (the slow tokenizer
class) with the same added tokens, added in MIO's order (config.json: speech_placeholder 64000,
speech_eos 64001, image_placeholder 64002, speech_bos 64003, image_eos 64004, image_bos 64005, then
the codes). Our side: build_tokens (training samples) and build_prompt over prompt_text /
chatml_text (generation prompts), with our Vocabulary on the same model.
"""

import numpy as np
import pytest

from mio_jax.data.shards import Sample
from mio_jax.data.templates import (DEFAULT_SYSTEM_PROMPT, VOICE_SYSTEM_PROMPT, TemplateOptions,
                                    build_tokens, chatml_text, prompt_text)
from mio_jax.generate.prompt import build_prompt
from mio_jax.vocab import Vocabulary

IMAGE_CODES, CODEBOOK, LAYERS = 16, 8, 4

# --- Facts, quoted from MIO's released code ---------------------------------------------------
# tokenization_mio.py
MIO_STD_MODE_SYSTEM = ("You are MIO, an AI assistant capable of understanding and generating images, text, "
                       "videos, and speech, selecting the appropriate modality according to the context.")
MIO_VOICE_MODE_SYSTEM = ("You are MIO, an AI assistant capable of understanding images, text, videos, and "
                         "speech, and generating speech. Please respond to the user with speech only, "
                         "starting with <spch> and ending with </spch>.")
MIO_CHAT_TEMPLATE = {"format_system": "<|im_start|>system\n{system}<|im_end|>",
                     "format_user": "<|im_start|>user\n{query}<|im_end|>",
                     "format_assistant": "<|im_start|>assistant\n{response}<|im_end|>",
                     "format_separator": "\n", "assistant_starter": "<|im_start|>assistant\n"}
SPECIALS = ["[SPCH]", "</spch>", "[IMG]", "<spch>", "</image>", "<image>"]  # config.json ids 64000..64005
# infer.py (Base prompts; <image_placeholder_0> / <speech_placeholder_0> are replaced by media strings)
CAPTION_SUFFIX = " The caption of this image is"  # "".join(<image_placeholder_j>) + this
ASR_SUFFIX = " The transcription of this speech is"  # "".join(<speech_placeholder_j>) + this
IMAGEN = "Please generate an image of ``a beautiful sunset over the ocean''"
TTS = ("Please generate a speech of ``The houses seemed miserable in the extreme especially to an eye "
       "accustomed to the smiling neatness of english cottages'': <spch>")
VIDCAP_PREFIX = "Please describe the following video: "  # + "".join(<image_placeholder_j>)
VIDGEN = ("Please generate a video for ``Bird eye panoramic view of busiest Asian cargo port with hundreds "
          "of ships loading export and import goods and thousands of containers in harbor.'': <image>")
# infer.py (Instruct conversations)
INST_CAPTION = "Please provide an accurate and detailed description of this image.\n<image_placeholder_0>"
INST_ASR = "Please transcribe this speech.\n<speech_placeholder_0>"
INST_SPEECH_UNDERSTANDING = "<speech_placeholder_0>\nPlease continue the story."
INST_TTS = ("The transcription is ``Mister Morton replied that far from making any claim upon his good opinion "
            "his only wish and the sole purpose of his visit was to find out the means of deserving it''. "
            "Please generate a speech according to the given transcription. Start with <spch>.")
INST_TEXT = "What's the capital of France?"


def _corpus() -> list[str]:
  lines = [MIO_STD_MODE_SYSTEM, MIO_VOICE_MODE_SYSTEM, CAPTION_SUFFIX.strip(), ASR_SUFFIX.strip(),
           IMAGEN, TTS, VIDCAP_PREFIX, VIDGEN, INST_CAPTION, INST_ASR, INST_TTS, INST_TEXT,
           "a red square above a blue circle", "count to six", "The capital of France is Paris."]
  return [line.replace("\n", " ") for line in lines] * 3


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
  """(our Vocabulary, MIO's-side oracle tokenizer) over one Yi-like SentencePiece model."""
  import sentencepiece as spm
  from transformers.tokenization_utils_sentencepiece import SentencePieceBackend

  d = tmp_path_factory.mktemp("yi_like")
  (d / "corpus.txt").write_text("\n".join(_corpus()) + "\n", encoding="utf-8")
  spm.SentencePieceTrainer.train(
      input=str(d / "corpus.txt"), model_prefix=str(d / "yi"), vocab_size=700, model_type="bpe",
      unk_id=0, bos_id=1, eos_id=2, pad_id=-1, unk_piece="<unk>", bos_piece="<|startoftext|>",
      eos_piece="<|endoftext|>", user_defined_symbols=["<|r3|>", "<|r4|>", "<|r5|>", "<|im_start|>", "<|im_end|>"],
      byte_fallback=True, add_dummy_prefix=False, normalization_rule_name="identity",
      remove_extra_whitespaces=False, hard_vocab_limit=False, minloglevel=2)
  model = str(d / "yi.model")
  oracle = SentencePieceBackend(vocab_file=model, legacy=True, bos_token="<|startoftext|>",
                                eos_token="<|endoftext|>", unk_token="<unk>")
  oracle.add_tokens(SPECIALS + [f"<img{i}>" for i in range(IMAGE_CODES)]
                    + [f"<spch{i}>" for i in range(LAYERS * CODEBOOK)])
  vocab = Vocabulary(text_model=model, image_codes=IMAGE_CODES, speech_codebook=CODEBOOK, speech_layers=LAYERS)
  # The layout facts: specials right after the text ids, in MIO's order; codes after them.
  assert oracle.convert_tokens_to_ids(SPECIALS) == list(range(vocab.text_size, vocab.text_size + 6))
  assert oracle.convert_tokens_to_ids(["<img0>", "<spch0>", "<spch8>"]) == [
      vocab.image_base, vocab.speech_base, vocab.speech_base + CODEBOOK]
  assert (vocab.bos, vocab.eos, vocab.im_start, vocab.im_end) == (1, 2, 6, 7)
  assert len(vocab.encode_text(CAPTION_SUFFIX)) < len(CAPTION_SUFFIX) // 2  # real merges, not bytes
  return vocab, oracle


def mio_ids(oracle, text: str) -> list[int]:
  """MIOTokenizer.__call__: BOS string prepended unless present, then the tokenizer on the string."""
  if not text.startswith("<|startoftext|>"):
    text = "<|startoftext|>" + text
  return oracle(text, add_special_tokens=False).input_ids


def image_str(grid) -> str:  # tokenize_images(add_begin_end=True)
  return "<image>" + "".join(f"<img{int(i)}>" for i in np.ravel(grid)) + "</image>"


def speech_str(codes, add_timbre: bool) -> str:  # tokenize_speeches: layer k's code c is <spch{c + 1024*k}>
  layers = LAYERS if add_timbre else 1
  return "<spch>" + "".join(f"<spch{int(c) + CODEBOOK * k}>" for k in range(layers) for c in codes[k]) + "</spch>"


RNG = np.random.default_rng(7)
GRID = RNG.integers(0, IMAGE_CODES, (2, 3)).astype(np.int32)
FRAMES = RNG.integers(0, IMAGE_CODES, (3, 2, 2)).astype(np.int32)
SPEECH = RNG.integers(0, CODEBOOK, (8, 5)).astype(np.int32)


def _pair(kind, media_type, codes, text):
  return Sample(kind, [{"type": media_type, "codes": codes}, {"type": "text", "text": text}], "mio")


def _ours(sample, vocab, prob, prompt_only=False):
  opts = TemplateOptions(image_generation_prob=prob, video_generation_prob=prob, speech_generation_prob=prob)
  return build_tokens(sample, vocab, np.random.default_rng(0), opts, prompt_only=prompt_only)[0].tolist()


# --- Base model ----------------------------------------------------------------------------------
def test_base_captioning(tokenizers):
  vocab, oracle = tokenizers
  want = mio_ids(oracle, image_str(GRID) + CAPTION_SUFFIX)
  s = _pair("image_text", "image", GRID, "a red square above a blue circle")
  assert _ours(s, vocab, 0.0, prompt_only=True) == want
  assert build_prompt(vocab, prompt_text("image_caption"), image_codes=GRID).tolist() == want
  # The training sample continues MIO's prompt with " {caption}", then EOS.
  assert _ours(s, vocab, 0.0) == mio_ids(oracle, image_str(GRID) + CAPTION_SUFFIX
                                         + " a red square above a blue circle") + [vocab.eos]


def test_base_image_generation(tokenizers):
  vocab, oracle = tokenizers
  caption = "a beautiful sunset over the ocean"
  s = _pair("image_text", "image", GRID, caption)
  ours = _ours(s, vocab, 1.0)
  want = mio_ids(oracle, IMAGEN)
  assert ours[:len(want)] == want  # MIO's prompt, then the image: "<image>" opens it
  assert build_prompt(vocab, prompt_text("image_generation", caption=caption)).tolist() == \
      want + [vocab.image_start] == _ours(s, vocab, 1.0, prompt_only=True)
  assert ours == mio_ids(oracle, IMAGEN + image_str(GRID)) + [vocab.eos]


def test_base_asr(tokenizers):
  vocab, oracle = tokenizers
  want = mio_ids(oracle, speech_str(SPEECH, add_timbre=False) + ASR_SUFFIX)
  s = _pair("speech_text", "speech", SPEECH, "count to six")
  for stage in (1, 2, 3):  # one wording in every stage
    opts = TemplateOptions(stage=stage, speech_generation_prob=0.0)
    assert build_tokens(s, vocab, np.random.default_rng(0), opts, prompt_only=True)[0].tolist() == want
  assert build_prompt(vocab, prompt_text("speech_asr"), speech_codes=SPEECH).tolist() == want


def test_base_tts(tokenizers):
  vocab, oracle = tokenizers
  text = TTS[len("Please generate a speech of ``"):-len("'': <spch>")]
  s = _pair("speech_text", "speech", SPEECH, text)
  want = mio_ids(oracle, TTS)
  assert _ours(s, vocab, 1.0, prompt_only=True) == want
  assert build_prompt(vocab, prompt_text("speech_tts", transcription=text)).tolist() == want
  full = TTS[:-len("<spch>")] + speech_str(SPEECH, add_timbre=True)  # output speech: all 4 layers
  assert _ours(s, vocab, 1.0) == mio_ids(oracle, full) + [vocab.eos]


def test_base_video_captioning_and_generation(tokenizers):
  vocab, oracle = tokenizers
  frames = "".join(image_str(f) for f in FRAMES)
  s = _pair("video_text", "video", FRAMES, "a circle moves")
  assert _ours(s, vocab, 0.0, prompt_only=True) == mio_ids(oracle, VIDCAP_PREFIX + frames)
  assert _ours(s, vocab, 0.0) == mio_ids(oracle, VIDCAP_PREFIX + frames + " a circle moves") + [vocab.eos]
  text = VIDGEN[len("Please generate a video for ``"):-len("'': <image>")]
  s = _pair("video_text", "video", FRAMES, text)
  assert _ours(s, vocab, 1.0, prompt_only=True) == mio_ids(oracle, VIDGEN)
  assert build_prompt(vocab, prompt_text("video_generation", description=text)).tolist() == mio_ids(oracle, VIDGEN)
  assert _ours(s, vocab, 1.0) == mio_ids(oracle, VIDGEN[:-len("<image>")] + frames) + [vocab.eos]


# --- Instruct model ------------------------------------------------------------------------------
def mio_chat(conversation, mode="std", add_generation_prompt=True) -> str:
  """tokenization_mio.py apply_chat_template(tokenize=False) without the BOS it adds."""
  t = MIO_CHAT_TEMPLATE
  s = t["format_system"].format(system=MIO_VOICE_MODE_SYSTEM if mode == "voice" else MIO_STD_MODE_SYSTEM)
  s += t["format_separator"]
  for turn in conversation:
    key = "format_user" if turn["role"] == "user" else "format_assistant"
    s += t[key].format(**{"query" if turn["role"] == "user" else "response": turn["content"]}) + t["format_separator"]
  return s + t["assistant_starter"] if add_generation_prompt else s[:-len(t["format_separator"])]


def _conversation(*parts):
  return Sample("conversation", [dict(p) for p in parts], "mio")


def _check_chat(vocab, oracle, sample, mio_turns, answer, mode="std"):
  """Our training sample = MIO's conversation with the answer; our chat prompt = MIO's prompt."""
  full = mio_ids(oracle, mio_chat(mio_turns + [{"role": "assistant", "content": answer}], mode, False))
  for loss_mask in ("all", "assistant"):
    ids, weights = build_tokens(sample, vocab, None, TemplateOptions(stage=4, loss_mask=loss_mask))
    assert ids.tolist() == full
  prompt = mio_ids(oracle, mio_chat(mio_turns, mode))
  assert full[:len(prompt)] == prompt
  assert weights[:len(prompt)].max() == 0.0 and weights[len(prompt):].min() == 1.0  # the answer, <|im_end|>
  return prompt


def test_instruct_text_chat(tokenizers):
  vocab, oracle = tokenizers
  sample = _conversation({"type": "text", "text": INST_TEXT, "role": "user"},
                         {"type": "text", "text": "The capital of France is Paris.", "role": "assistant"})
  prompt = _check_chat(vocab, oracle, sample, [{"role": "user", "content": INST_TEXT}],
                       "The capital of France is Paris.")
  assert build_prompt(vocab, chatml_text([("user", INST_TEXT)])).tolist() == prompt
  assert DEFAULT_SYSTEM_PROMPT == MIO_STD_MODE_SYSTEM


def test_instruct_captioning_and_asr_turns_keep_the_newline(tokenizers):
  vocab, oracle = tokenizers
  instruction = INST_CAPTION.split("\n")[0]
  sample = _conversation({"type": "text", "text": instruction, "role": "user"},
                         {"type": "image", "codes": GRID, "role": "user"},
                         {"type": "text", "text": "A red square.", "role": "assistant"})
  content = INST_CAPTION.replace("<image_placeholder_0>", image_str(GRID))
  prompt = _check_chat(vocab, oracle, sample, [{"role": "user", "content": content}], "A red square.")
  text = chatml_text([("user", instruction + "\n{image}")])
  assert build_prompt(vocab, text, image_codes=GRID).tolist() == prompt
  for user, parts in (
      (INST_ASR, [{"type": "text", "text": "Please transcribe this speech."}, {"type": "speech", "codes": SPEECH}]),
      (INST_SPEECH_UNDERSTANDING, [{"type": "speech", "codes": SPEECH}, {"type": "text", "text": "Please continue the story."}])):
    sample = _conversation(*[{**p, "role": "user"} for p in parts],
                           {"type": "text", "text": "count to six", "role": "assistant"})
    content = user.replace("<speech_placeholder_0>", speech_str(SPEECH, add_timbre=False))
    prompt = _check_chat(vocab, oracle, sample, [{"role": "user", "content": content}], "count to six")
    text = chatml_text([("user", user.replace("<speech_placeholder_0>", "{speech}"))])
    assert build_prompt(vocab, text, speech_codes=SPEECH).tolist() == prompt


def test_instruct_tts_in_voice_mode(tokenizers):
  """A speech-only answer puts the conversation in voice mode: MIO's voice system prompt, whose
  literal <spch> / </spch> are the special ids, like the "Start with <spch>." of the user turn."""
  vocab, oracle = tokenizers
  sample = _conversation({"type": "text", "text": INST_TTS, "role": "user"},
                         {"type": "speech", "codes": SPEECH, "role": "assistant"})
  prompt = _check_chat(vocab, oracle, sample, [{"role": "user", "content": INST_TTS}],
                       speech_str(SPEECH, add_timbre=True), mode="voice")
  assert build_prompt(vocab, chatml_text([("user", INST_TTS)], mode="voice")).tolist() == prompt
  assert VOICE_SYSTEM_PROMPT == MIO_VOICE_MODE_SYSTEM
  assert prompt.count(vocab.speech_start) == 2 and prompt.count(vocab.speech_end) == 1


def test_dummy_prefix_model_is_encoded_as_yi_settings_would(tmp_path):
  """A model trained with SentencePiece's dummy prefix (our committed mini.model) is encoded with it
  switched off, so the ids are what MIO's tokenizer gives over that model with Yi's settings."""
  import os

  from sentencepiece import sentencepiece_model_pb2
  from transformers.tokenization_utils_sentencepiece import SentencePieceBackend

  path = os.path.join(os.path.dirname(__file__), "..", "..", "data", "vocab", "mini.model")
  proto = sentencepiece_model_pb2.ModelProto()
  proto.ParseFromString(open(path, "rb").read())
  assert proto.normalizer_spec.add_dummy_prefix  # the case this test is about
  proto.normalizer_spec.add_dummy_prefix = False
  (tmp_path / "yi_settings.model").write_bytes(proto.SerializeToString())
  oracle = SentencePieceBackend(vocab_file=str(tmp_path / "yi_settings.model"), legacy=True,
                                bos_token="<|startoftext|>", eos_token="<|endoftext|>", unk_token="<unk>")
  oracle.add_tokens(SPECIALS + [f"<img{i}>" for i in range(IMAGE_CODES)])
  vocab = Vocabulary(text_model=path, image_codes=IMAGE_CODES, speech_codebook=CODEBOOK, speech_layers=LAYERS)
  s = _pair("image_text", "image", GRID, "a red square")
  assert _ours(s, vocab, 0.0) == mio_ids(oracle, image_str(GRID) + CAPTION_SUFFIX + " a red square") + [vocab.eos]
  assert vocab.encode_text(CAPTION_SUFFIX)[0] == vocab.piece_to_id("▁The")
  assert vocab.decode(vocab.encode_text(" a\nb ")) == " a\nb "  # verbatim both ways
  text = chatml_text([("user", INST_CAPTION.replace("<image_placeholder_0>", "{image}"))])
  assert build_prompt(vocab, text, image_codes=GRID).tolist() == mio_ids(
      oracle, mio_chat([{"role": "user", "content": INST_CAPTION.replace("<image_placeholder_0>", image_str(GRID))}]))
