"""The exported tokenizer: AutoTokenizer gives our data pipeline's ids for text with media blocks."""

import numpy as np
import pytest

from export_helpers import TINY, TINY_VOCAB
from mio_jax.data.shards import Sample
from mio_jax.data.templates import TEMPLATE_SETS, TemplateOptions, build_tokens
from mio_jax.export import mapping
from mio_jax.export.hf_tokenizer import save_hf_tokenizer
from mio_jax.vocab import Vocabulary

TEXTS = ["Hello world, this is a test.", "  leading,  doubled   spaces and trailing  ",
         "digits 12345, ligature \ufb01 and full-width \uff21\uff22", "bytes: \U0001f642 and \u4e2d\u6587",
         "line\nbreak\ttab", "x"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  """Tokenizer files plus config.json, as the export writes them (AutoTokenizer reads both)."""
  from transformers import AutoTokenizer, LlamaConfig

  out = str(tmp_path_factory.mktemp("tok"))
  vocab = Vocabulary.from_config(TINY_VOCAB)
  save_hf_tokenizer(vocab, out)
  LlamaConfig(**mapping.hf_config_dict(TINY, max_position_embeddings=4096, bos_token_id=vocab.bos,
                                       eos_token_id=vocab.eos, torch_dtype="float32")).save_pretrained(out)
  return vocab, AutoTokenizer.from_pretrained(out)


def pieces(vocab, ids):
  return "".join(vocab.id_to_piece(i) for i in ids)


def test_every_id_has_our_piece(exported):
  vocab, tok = exported
  assert len(tok) == vocab.size == TINY.vocab_size
  for i in list(range(0, 20)) + list(range(vocab.text_size, vocab.size, 97)) + [vocab.size - 1]:
    assert tok.convert_ids_to_tokens(i) == vocab.id_to_piece(i), i
  assert (tok.bos_token_id, tok.eos_token_id) == (vocab.bos, vocab.eos)


@pytest.mark.parametrize("text", TEXTS)
def test_plain_text_matches_sentencepiece(exported, text):
  vocab, tok = exported
  assert tok(text, add_special_tokens=False).input_ids == vocab.encode_text(text)
  assert tok(text).input_ids == [vocab.bos] + vocab.encode_text(text)


@pytest.mark.parametrize("template_set", sorted(TEMPLATE_SETS))
@pytest.mark.parametrize("kind,prob,template", [
    ("image_text", 0.0, "image_caption"), ("image_text", 1.0, "image_generation"),
    ("video_text", 0.0, "video_caption"), ("video_text", 1.0, "video_generation"),
    ("speech_text", 0.0, "speech_asr"), ("speech_text", 1.0, "speech_tts")])
def test_template_strings_give_pipeline_ids(exported, kind, prob, template, template_set):
  """A rendered template as one string (media as their pieces), as MIO tokenizes its prompts,
  encodes to build_tokens' ids, minus the EOS; and decodes back to that string."""
  vocab, tok = exported
  rng = np.random.default_rng(0)
  media = {"image_text": ("image", rng.integers(0, 1024, (3, 4))),
           "video_text": ("video", rng.integers(0, 1024, (2, 2, 3))),
           "speech_text": ("speech", rng.integers(0, 1024, (8, 5)))}[kind]
  text = "a small red cube, 3 cm wide"
  sample = Sample(kind=kind, parts=[{"type": media[0], "codes": media[1]}, {"type": "text", "text": text}],
                  source="test")
  opts = TemplateOptions(image_generation_prob=prob, video_generation_prob=prob, speech_generation_prob=prob,
                         template_set=template_set)
  ids, _ = build_tokens(sample, vocab, np.random.default_rng(0), opts)
  if media[0] == "speech":
    media_ids = vocab.speech_ids(media[1], output=template == "speech_tts")
  elif media[0] == "video":
    media_ids = vocab.video_ids(media[1])
  else:
    media_ids = vocab.image_ids(media[1])
  field = {"image_text": "caption", "video_text": "description", "speech_text": "transcription"}[kind]
  t = TEMPLATE_SETS[template_set][template]
  string = (t.prompt + t.answer).format(**{media[0]: pieces(vocab, media_ids), field: text})
  hf_ids = tok(string).input_ids
  assert hf_ids == ids[:-1].tolist() and ids[-1] == vocab.eos
  assert tok.decode(hf_ids[1:]) == string  # verbatim: every space and special piece comes back


def test_unigram_text_model_matches_sentencepiece(tmp_path):
  """The unigram branch of the conversion (BPE is the fixture's model)."""
  import glob

  from export_helpers import REPO
  from mio_jax.export.hf_tokenizer import multimodal_tokenizer
  from mio_jax.vocab_train import train_text_model

  path = train_text_model(sorted(glob.glob(f"{REPO}/data/mini/*.jsonl")), str(tmp_path / "uni"), 500,
                          model_type="unigram")
  vocab = Vocabulary(text_model=path, image_codes=16, speech_codebook=8, speech_layers=4)
  tok = multimodal_tokenizer(vocab)
  for text in TEXTS:
    assert tok.encode(text, add_special_tokens=False).ids == vocab.encode_text(text), text
  block = vocab.image_ids(np.array([[1, 15]]))
  assert tok.encode(pieces(vocab, block) + " hi").ids == [vocab.bos, *block, *vocab.encode_text(" hi")]
