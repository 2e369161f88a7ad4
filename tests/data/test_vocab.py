"""The unified vocabulary: MIO-7B layout by hand, round trips, speech/image/video id layouts."""

import os
import pickle

import ml_collections
import numpy as np
import pytest
import sentencepiece as spm

from mio_jax.vocab import SPECIAL_TOKENS, Vocabulary, vocab_size_from_config
import synthetic_shards

MIO7B = dict(text_size=64000, image_codes=8192, speech_codebook=1024, speech_layers=4,
             code_order="image_first")


@pytest.fixture(scope="module")
def text_model(tmp_path_factory):
  return synthetic_shards.tiny_text_model(str(tmp_path_factory.mktemp("sp")))


def test_mio7b_layout_by_hand():
  cfg = ml_collections.ConfigDict(dict(MIO7B, text_model=None))
  assert vocab_size_from_config(cfg) == 76294  # 64000 + 6 + 8192 + 4 * 1024, no model file read
  v = Vocabulary.from_config(cfg)
  assert v.size == 76294
  assert (v.spch_tag, v.speech_end, v.img_tag, v.speech_start, v.image_end, v.image_start) == tuple(
      range(64000, 64006))
  assert v.code_id("image", 0, 0) == 64006 and v.code_id("image", 0, 8191) == 72197
  assert v.code_id("speech", 0, 0) == 72198 and v.code_id("speech", 3, 1023) == 76293
  assert v.code_of(72198 + 2 * 1024 + 5) == ("speech", 2, 5)
  assert (v.bos, v.eos, v.im_end, v.im_start_ids, v.im_start) == (1, 2, 7, (6,), 6)  # Yi's ids
  assert v.code_range("image") == (64006, 72198)
  assert v.code_range("speech", 1) == (72198 + 1024, 72198 + 2048)
  # The per-modality losses' ranges: the special tokens count as text.
  assert v.modality_ranges() == {"text": (0, 64006), "image": (64006, 72198), "speech": (72198, 76294)}


def test_speech_first_order():
  v = Vocabulary(**dict(MIO7B, code_order="speech_first"))
  assert v.code_id("speech", 0, 0) == 64006 and v.code_id("image", 0, 0) == 64006 + 4096
  assert v.size == 76294
  assert v.modality_ranges() == {"text": (0, 64006), "image": (68102, 76294), "speech": (64006, 68102)}
  with pytest.raises(ValueError, match="code_order"):
    Vocabulary(**dict(MIO7B, code_order="video_first"))


def test_speech_input_is_content_only_and_output_is_four_layers():
  v = Vocabulary(**MIO7B)
  codes = np.arange(8 * 3, dtype=np.int32).reshape(8, 3)  # layer l frame t = 3l + t
  s = 72198
  assert v.speech_ids(codes, output=False).tolist() == [64003, s + 0, s + 1, s + 2, 64001]
  expected = [64003] + [s + l * 1024 + 3 * l + t for l in range(4) for t in range(3)] + [64001]
  out = v.speech_ids(codes, output=True)
  assert out.tolist() == expected
  np.testing.assert_array_equal(v.speech_codes(out), codes[:4])
  with pytest.raises(ValueError, match="speech codes outside"):
    v.speech_ids(np.full((8, 2), 1024), output=False)


def test_image_and_video_blocks():
  v = Vocabulary(**MIO7B)
  grid = np.array([[1, 2], [3, 4]])
  assert v.image_ids(grid).tolist() == [64005, 64007, 64008, 64009, 64010, 64004]
  video = np.stack([grid, grid + 10])
  assert v.video_ids(video).tolist() == v.image_ids(grid).tolist() + v.image_ids(grid + 10).tolist()


def test_round_trips_with_trained_model(text_model):
  sp = spm.SentencePieceProcessor(model_file=text_model)
  v = Vocabulary(text_model=text_model, image_codes=16, speech_codebook=8, speech_layers=4)
  assert v.text_size == sp.get_piece_size() and v.size == v.text_size + 6 + 16 + 32
  for i in range(v.size):  # every id: id -> piece -> id
    assert v.piece_to_id(v.id_to_piece(i)) == i
  for i in range(v.text_size + 6, v.size):  # every code id: id -> (modality, layer, code) -> id
    assert v.code_id(*v.code_of(i)) == i
  assert [v.id_to_piece(v.text_size + k) for k in range(6)] == list(SPECIAL_TOKENS)
  text = "two plus two makes four"
  assert v.decode(v.encode_text(text)) == text
  # ChatML markers are single pieces at Yi's ids in a model trained by mio_jax.vocab_train.
  assert (v.bos, v.eos, v.im_start_ids, v.im_end) == (1, 2, (6,), 7)
  assert sp.id_to_piece(6) == "<|im_start|>" and sp.id_to_piece(7) == "<|im_end|>"
  clone = pickle.loads(pickle.dumps(v))
  assert clone.encode_text(text) == v.encode_text(text)


def test_model_without_chatml_pieces(tmp_path, text_model):
  corpus = tmp_path / "c.txt"
  corpus.write_text("\n".join(synthetic_shards.corpus_lines(100)))
  spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(tmp_path / "plain"),
                                 vocab_size=320, byte_fallback=True, hard_vocab_limit=False,
                                 minloglevel=2)
  v = Vocabulary(text_model=str(tmp_path / "plain.model"))
  assert v.im_end == v.eos  # no <|im_end|> piece: stop on EOS
  assert len(v.im_start_ids) > 1 and v.decode(v.im_start_ids) == "<|im_start|>"
  assert v.im_start is None


def test_config_errors(text_model):
  with pytest.raises(ValueError, match=r"text_size=64000 but .* has \d+ pieces"):
    Vocabulary(text_model=text_model, text_size=64000)
  with pytest.raises(ValueError, match="config.vocab.text_model='/nope.model'"):
    Vocabulary(text_model="/nope.model")
  with pytest.raises(ValueError, match="outside the vocabulary"):
    Vocabulary(**MIO7B).id_to_piece(76294)


def test_train_cli_gives_exact_size_from_mini_corpus(tmp_path, capsys):
  from mio_jax import vocab_train
  root = os.path.join(os.path.dirname(__file__), "..", "..", "data")
  inputs = [os.path.join(root, "mini", f"{k}.jsonl") for k in ("conversation", "interleaved")]
  row = {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]},
                      {"role": "assistant", "content": "hello"}]}
  assert list(vocab_train._json_texts(row)) == ["hi", "hello"]
  vocab_train.main(["--input", *inputs, "--model_prefix", str(tmp_path / "m"), "--vocab_size", "700"])
  assert "700 pieces" in capsys.readouterr().out  # small corpus: padded with reserved symbols
  v = Vocabulary(text_model=str(tmp_path / "m.model"))
  assert v.text_size == 700 and (v.im_start, v.im_end) == (6, 7)
  committed = Vocabulary(text_model=os.path.join(root, "vocab", "mini.model"))
  assert committed.size == 13294  # the smoke preset's vocabulary: 1000 + 6 + 8192 + 4 * 1024
  assert committed.decode(committed.encode_text("a red circle\nabove 12")) == "a red circle\nabove 12"
