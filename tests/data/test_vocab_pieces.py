"""Code pieces in MIO's names (`<imgN>`, `<spchN>`): by hand, and read back by MIO's own parsing."""

import os
import re

import numpy as np
import pytest

from mio_jax.vocab import Vocabulary

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MINI = os.path.join(ROOT, "data", "vocab", "mini.model")
MIO7B = dict(text_size=64000, image_codes=8192, speech_codebook=1024, speech_layers=4)


@pytest.mark.parametrize("order,image_base,speech_base", [("image_first", 64006, 72198),
                                                          ("speech_first", 68102, 64006)])
def test_mio7b_pieces_by_hand(order, image_base, speech_base):
  v = Vocabulary(**MIO7B, code_order=order)
  assert v.piece_to_id("<img0>") == image_base and v.piece_to_id("<img5>") == image_base + 5
  assert v.piece_to_id("<img8191>") == image_base + 8191
  # <spch1029>: layer 1 (the first timbre layer), code 5: 1029 = 5 + 1024 * 1 (tokenization_mio.py).
  assert v.piece_to_id("<spch1029>") == speech_base + 1029 and v.code_of(speech_base + 1029) == ("speech", 1, 5)
  assert v.piece_to_id("<spch4095>") == speech_base + 4095
  assert v.id_to_piece(image_base + 5) == "<img5>" and v.id_to_piece(speech_base + 1029) == "<spch1029>"
  assert v.id_to_piece(64003) == "<spch>" and v.piece_to_id("<spch>") == 64003
  for bad in ("<img8192>", "<spch4096>", "<img007>", "<img:3>", "<spch1:5>"):
    with pytest.raises(ValueError):
      v.piece_to_id(bad)


def mio_image_codes(image_str):
  """tokenization_mio.py, MIOTokenizer.decode_images: `image_ids = re.findall(r'\\d+', image_str)`."""
  return [int(i) for i in re.findall(r"\d+", image_str)]


def mio_speech_codes(speech_str, vocab_size=1024):
  """tokenization_mio.py, MIOTokenizer.decode_speeches: split tokens, int(token[5:-1]), view(4, -1),
  subtract vocab_size * k from part k."""
  if "> <" not in speech_str:
    speech_str = speech_str.replace("><", "> <")
  ids = [int(t[5:-1]) for t in speech_str.split() if t not in ["<spch>", "</spch>"]]
  ids = np.asarray(ids).reshape(4, -1)
  return ids - vocab_size * np.arange(4)[:, None]


@pytest.mark.parametrize("order", ["image_first", "speech_first"])
def test_our_pieces_are_what_mio_decodes(order):
  v = Vocabulary(**MIO7B, code_order=order)
  rng = np.random.default_rng(0)
  grid = rng.integers(0, 8192, (2, 3))
  image_str = v.decode(v.image_ids(grid))  # no text ids: no SentencePiece model needed
  assert image_str.startswith("<image><img") and image_str.endswith("></image>")
  # MIO's detokenize regex finds the block, and its parse gives our codes back.
  assert re.findall(r"(<image>\s*(?:<img\d+>(?:\s*<img\d+>)*)\s*</image>)", image_str) == [image_str]
  assert mio_image_codes(image_str) == grid.ravel().tolist()
  codes = rng.integers(0, 1024, (8, 5))
  speech_str = v.decode(v.speech_ids(codes, output=True))
  assert re.findall(r"(<spch>\s*(?:<spch\d+>(?:\s*<spch\d+>)*)\s*</spch>)", speech_str) == [speech_str]
  np.testing.assert_array_equal(mio_speech_codes(speech_str), codes[:4])
  # And MIO's strings (tokenize_speeches: f"<spch{int(tokenid) + vocab_size * k}>") parse to our ids.
  mio_str = "<spch>" + "".join(f"<spch{int(c) + 1024 * k}>" for k in range(4) for c in codes[k]) + "</spch>"
  assert v.encode_with_specials(mio_str) == v.speech_ids(codes, output=True).tolist()


def test_encode_with_specials_mixes_text_and_codes():
  v = Vocabulary(text_model=MINI)  # 1000 text ids, MIO's code blocks after them
  ids = v.encode_with_specials("<image><img12><img7></image> The caption of this image is")
  # Text between pieces is verbatim (MIO's added tokens keep the whitespace next to them).
  assert ids == [1005, 1006 + 12, 1006 + 7, 1004] + v.encode_text(" The caption of this image is")
  ids = v.encode_with_specials("say <spch><spch5> </spch>  then stop")
  assert ids == (v.encode_text("say ") + [1003, 1006 + 8192 + 5] + v.encode_text(" ") + [1001]
                 + v.encode_text("  then stop"))
  # decode -> encode_with_specials is the identity when each text run was encoded on its own.
  ids = v.encode_text("a red cube") + v.image_ids(np.array([[3, 9]])).tolist() + v.encode_text("on grass")
  assert v.encode_with_specials(v.decode(ids)) == ids
  with pytest.raises(ValueError, match="<spch4096>"):
    v.encode_with_specials("<spch4096>")
