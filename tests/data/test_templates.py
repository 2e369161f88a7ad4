"""Templates: MIO's stage 1-3 formats and ChatML, checked against sequences assembled by hand."""

import numpy as np
import pytest

from mio_jax.data.packing import to_example
from mio_jax.data.shards import Sample
from mio_jax.data.templates import TemplateOptions, build_tokens
from mio_jax.vocab import Vocabulary
import synthetic_shards


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
  return Vocabulary(text_model=synthetic_shards.tiny_text_model(str(tmp_path_factory.mktemp("sp"))))


def _pair(kind, media_type, codes, text="a red square"):
  return Sample(kind, [{"type": media_type, "codes": codes}, {"type": "text", "text": text}], "t")


def _build(sample, vocab, **opts):
  return build_tokens(sample, vocab, np.random.default_rng(0), TemplateOptions(**opts))


def test_image_caption_and_generation(vocab):
  """Text runs are encoded verbatim (the space after </image> is the first piece's "▁")."""
  grid = np.arange(4, dtype=np.int32).reshape(2, 2)
  s = _pair("image_text", "image", grid)
  enc, img = vocab.encode_text, vocab.image_ids(grid).tolist()
  ids, w = _build(s, vocab, image_generation_prob=0.0)
  assert ids.tolist() == [1] + img + enc(" The caption of this image is a red square") + [2]
  assert w.tolist() == [0.0] + [1.0] * (len(ids) - 1)
  ids, _ = _build(s, vocab, image_generation_prob=1.0)
  assert ids.tolist() == [1] + enc("Please generate an image of ``a red square''") + img + [2]
  ids, _ = _build(s, vocab, image_generation_prob=0.0, template_set="paper")
  assert ids.tolist() == [1] + img + enc(" The caption of this image is: a red square") + [2]
  ids, _ = _build(s, vocab, image_generation_prob=1.0, template_set="paper")
  assert ids.tolist() == [1] + enc('Please generate an image of "a red square": ') + img + [2]


def test_prompt_only_is_the_samples_prefix_up_to_the_answer(vocab):
  grid = np.arange(4, dtype=np.int32).reshape(2, 2)
  s = _pair("image_text", "image", grid, "  a red square ")  # the field is stripped
  for prob, prompt in ((0.0, vocab.image_ids(grid).tolist() + vocab.encode_text(" The caption of this image is")),
                       (1.0, vocab.encode_text("Please generate an image of ``a red square''") + [vocab.image_start])):
    opts = TemplateOptions(image_generation_prob=prob)
    ids, _ = build_tokens(s, vocab, np.random.default_rng(0), opts)
    head, _ = build_tokens(s, vocab, np.random.default_rng(0), opts, prompt_only=True)
    assert head.tolist() == [1] + prompt == ids[:len(head)].tolist()
  with pytest.raises(ValueError, match="a text sample has no prompt"):
    build_tokens(Sample("text", [{"type": "text", "text": "x"}], "t"), vocab, None, TemplateOptions(),
                 prompt_only=True)


def test_unknown_template_set_is_a_config_error():
  with pytest.raises(ValueError, match="config.data.template_set='mio' is not one of"):
    TemplateOptions(template_set="mio")


def test_video_direction_is_60_40(vocab):
  video = np.zeros((4, 2, 2), np.int32)
  s = _pair("video_text", "video", video)
  rng = np.random.default_rng(1)
  gen = [build_tokens(s, vocab, rng, TemplateOptions())[0][-2] == vocab.image_end
         for _ in range(2000)]
  assert abs(np.mean(gen) - 0.6) < 0.04
  ids, _ = _build(s, vocab, video_generation_prob=0.0)
  assert ids.tolist() == ([1] + vocab.encode_text("Please describe the following video: ")
                          + vocab.video_ids(video).tolist() + vocab.encode_text(" a red square") + [2])


def test_speech_asr_input_and_tts_output(vocab):
  codes = np.random.default_rng(0).integers(0, 1024, (8, 7)).astype(np.int32)
  s = _pair("speech_text", "speech", codes, "count to six")
  enc = vocab.encode_text
  content = vocab.speech_ids(codes, output=False).tolist()
  assert len(content) == 7 + 2
  for stage in (1, 3):  # MIO's release has one ASR wording
    ids, _ = _build(s, vocab, speech_generation_prob=0.0, stage=stage)
    assert ids.tolist() == [1] + content + enc(" The transcription of this speech is count to six") + [2]
  ids, _ = _build(s, vocab, speech_generation_prob=0.0, template_set="paper")
  assert ids.tolist() == [1] + content + enc(" Transcribe this speech: count to six") + [2]
  ids, _ = _build(s, vocab, speech_generation_prob=0.0, stage=3, template_set="paper")
  assert ids.tolist() == [1] + content + enc(" The transcription of this speech is: count to six") + [2]
  ids, _ = _build(s, vocab, speech_generation_prob=1.0)
  out = vocab.speech_ids(codes, output=True).tolist()
  assert len(out) == 4 * 7 + 2
  assert ids.tolist() == [1] + enc("Please generate a speech of ``count to six'': ") + out + [2]


def test_interleaved_and_text(vocab):
  grid = np.ones((2, 2), np.int32)
  s = Sample("interleaved", [{"type": "text", "text": "one "}, {"type": "image", "codes": grid},
                             {"type": "text", "text": "two"}], "t")
  ids, _ = _build(s, vocab)
  assert ids.tolist() == [1] + vocab.encode_text("one ") + vocab.image_ids(grid).tolist() + \
      vocab.encode_text("two") + [2]
  ids, _ = _build(Sample("text", [{"type": "text", "text": "red and blue"}], "t"), vocab,
                  add_bos=False, add_eos=False)
  assert ids.tolist() == vocab.encode_text("red and blue")
  # A special token written in text is its id, as in MIO's tokenizer (its added tokens).
  ids, _ = _build(Sample("text", [{"type": "text", "text": "a <image> b<|im_end|>"}], "t"), vocab,
                  add_bos=False, add_eos=False)
  assert ids.tolist() == vocab.encode_text("a ") + [vocab.image_start] + vocab.encode_text(" b") + [7]


def test_chatml_loss_on_assistant_turns_only(vocab):
  codes = np.zeros((8, 3), np.int32)
  s = Sample("conversation", [
      {"type": "text", "text": "say it", "role": "user"},
      {"type": "text", "text": "two plus two", "role": "assistant"},
      {"type": "speech", "codes": codes, "role": "assistant"},
  ], "t")
  ids, w = _build(s, vocab, loss_mask="assistant", system_prompt="be brief", stage=4)
  enc, st, end = vocab.encode_text, [6], [7]
  nl = enc("\n")
  assert vocab.decode(nl) == "\n"  # the trained model keeps newlines (identity normalization)
  # Between the markers the text is one run, as in MIO's one-string ChatML; "\n" between a turn's
  # text and its media (infer.py: "Please transcribe this speech.\n<spch>").
  run, header = enc("assistant\ntwo plus two\n"), enc("assistant\n")
  assert run[:len(header)] == header  # the tiny model has no piece across the newline
  head = [1] + st + enc("system\nbe brief") + end + nl + st + enc("user\nsay it") + end + nl + st + header
  answer = run[len(header):] + vocab.speech_ids(codes, output=True).tolist() + end
  assert ids.tolist() == head + answer
  assert w.tolist() == [0.0] * len(head) + [1.0] * len(answer)
  ex = to_example(ids, w, seq_len=1000, overlong="drop", source=0, num_sources=1)
  # Position j predicts token j+1: only positions whose target is in the answer count.
  expected = np.zeros(len(ids))
  expected[len(head) - 1:len(ids) - 1] = 1.0
  np.testing.assert_array_equal(ex["loss_mask"], expected)
  np.testing.assert_array_equal(ex["targets"][:-1], ids[1:])
  empty = to_example(ids[:0], w[:0], seq_len=10, overlong="drop", source=0, num_sources=1)
  assert "inputs" not in empty and empty["stats"].tolist() == [0, 0, 0, 0, 1]
  ids_all, w_all = _build(s, vocab, loss_mask="all", system_prompt="be brief")
  assert ids_all.tolist() == ids.tolist() and w_all[1:].min() == 1.0


def test_bad_pair_names_the_sample(vocab):
  s = Sample("image_text", [{"type": "text", "text": "no image"}], "t")
  with pytest.raises(ValueError, match="src x sample 9: a image_text sample needs one image part"):
    build_tokens(s, vocab, np.random.default_rng(0), TemplateOptions(), "src x sample 9")


def test_voice_mode_system_prompt(vocab):
  """Assistant turns that are all speech get MIO's voice-mode system prompt (tokenization_mio.py),
  whose literal <spch> / </spch> are the special ids; meta chat_mode overrides the guess."""
  from mio_jax.data.templates import VOICE_SYSTEM_PROMPT
  codes = np.zeros((8, 2), np.int32)
  parts = [{"type": "text", "text": "hi", "role": "user"}, {"type": "speech", "codes": codes, "role": "assistant"}]
  system = lambda ids: ids[2:ids.tolist().index(7)].tolist()  # noqa: E731  after BOS, <|im_start|>
  ids, _ = _build(Sample("conversation", parts, "t"), vocab)
  assert system(ids) == vocab.encode_with_specials("system\n" + VOICE_SYSTEM_PROMPT)
  assert vocab.speech_start in system(ids) and vocab.speech_end in system(ids)
  for sample, opts in ((Sample("conversation", parts, "t", {"chat_mode": "std"}), {}),
                       (Sample("conversation", parts, "t"), {"voice_system_prompt": ""}),
                       (Sample("conversation", parts[:1] + [{"type": "text", "text": "ok", "role": "assistant"}], "t"), {})):
    ids, _ = _build(sample, vocab, **opts)
    assert system(ids) == vocab.encode_text("system\n" + TemplateOptions().system_prompt)
  ids, _ = _build(Sample("conversation", parts[:1], "t", {"chat_mode": "voice"}), vocab)
  assert system(ids) == vocab.encode_with_specials("system\n" + VOICE_SYSTEM_PROMPT)
  with pytest.raises(ValueError, match="meta chat_mode='loud'"):
    _build(Sample("conversation", parts, "t", {"chat_mode": "loud"}), vocab)
