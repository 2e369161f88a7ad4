"""split_output: generated ids back to text and code arrays, with speech blocks checked as MIO's
tokenization_mio.check_speech_completeness checks them (4 parts, in layer order, of equal length)."""

import numpy as np
import pytest

from mio_jax.generate.prompt import split_output
from mio_jax.vocab import Vocabulary

VOCAB = Vocabulary(text_size=40, image_codes=8, speech_codebook=4, speech_layers=4)
S0, S1, S2, S3 = (VOCAB.code_range("speech", layer)[0] for layer in range(4))  # <spch0>, <spch4>, ...
OPEN, CLOSE = VOCAB.speech_start, VOCAB.speech_end


def speech(*body, closed=True):
  return split_output(VOCAB, [OPEN, *body] + ([CLOSE] if closed else []))


def test_four_equal_parts_in_order():
  out = speech(S0 + 1, S0 + 2, S1, S1 + 3, S2 + 2, S2, S3 + 1, S3 + 1)
  np.testing.assert_array_equal(out.speech[0], [[1, 2], [0, 3], [2, 0], [1, 1]])
  assert out.complete == [("speech", 0, True)] and out.text == "[speech 0]"


def test_content_only_block_is_an_input_block():
  # 4 content codes: not to be read as 4 parts of 1 (what reshaping the flat ids would give).
  out = speech(S0 + 1, S0 + 2, S0 + 3, S0)
  np.testing.assert_array_equal(out.speech[0], [[1, 2, 3, 0]])


@pytest.mark.parametrize("body, message", [
    ((S0, S0, S2, S2, S1, S1, S3, S3), r"speech block 0: speech layers out of order: parts are layers \[0, 2, 1, 3\] "
                                       r"with \[2, 2, 2, 2\] codes"),
    ((S0, S1, S2, S3, S0, S1, S2, S3), r"out of order: parts are layers \[0, 1, 2, 3, 0, 1, 2, 3\]"),
    ((S1, S1, S2, S2), r"out of order: parts are layers \[1, 2\]"),
    ((S0, S0, S1, S1, S2, S3, S3), r"unequal length \[2, 2, 1, 2\]"),
    ((S0, S0, S1, S1), r"2 speech layer parts with \[2, 2\] codes, expected 4"),
    ((), "no speech codes"),
    ((S0, 7, S1), r"id 7 at position 1 is not a speech code"),
    ((S0, VOCAB.image_base, S1), "is not a speech code"),
])
def test_malformed_closed_block_raises_naming_it(body, message):
  with pytest.raises(ValueError, match=message):
    speech(*body)


def test_second_block_is_named():
  good = [OPEN, S0, S1, S2, S3, CLOSE]
  with pytest.raises(ValueError, match="speech block 1: "):
    split_output(VOCAB, good + [OPEN, S0, S2, CLOSE])


def test_cut_off_block_is_incomplete_not_an_error():
  out = speech(S0 + 1, S0 + 2, S1 + 3, S1, S2 + 1, closed=False)
  assert out.complete == [("speech", 0, False)]
  np.testing.assert_array_equal(out.speech[0], [1, 2, 7, 4, 9])  # layer * 4 + code, MIO's <spch{k}>
  assert speech(S0, S0, S0, closed=False).speech[0].tolist() == [0, 0, 0]
  with pytest.raises(ValueError, match="out of order"):  # what is there must still be in order
    speech(S0, S2, closed=False)
  with pytest.raises(ValueError, match=r"unequal length \[2, 1, 1\]"):
    speech(S0, S0, S1, S2, closed=False)


def test_image_block_of_other_ids_raises():
  with pytest.raises(ValueError, match="image block 0: id .* at position 1 is not an image code"):
    split_output(VOCAB, [VOCAB.image_start, VOCAB.image_base, S0, VOCAB.image_end])
  out = split_output(VOCAB, [VOCAB.image_start] + [VOCAB.image_base + c for c in (1, 2, 3, 4)] + [VOCAB.image_end])
  np.testing.assert_array_equal(out.images[0], [[1, 2], [3, 4]])


def test_unclosed_block_of_a_prompt_ignores_tags_written_in_text():
  from mio_jax.generate.prompt import unclosed_block

  # "... starting with <spch> and ending with </spch>." then "Start with <spch>." (MIO's voice mode).
  voice = [1, 20, OPEN, 21, CLOSE, 22, 23, OPEN, 24, 25]
  assert unclosed_block(VOCAB, voice).tolist() == []
  assert unclosed_block(VOCAB, voice + [OPEN]).tolist() == [OPEN]
  assert unclosed_block(VOCAB, voice + [OPEN, S0 + 1, S0 + 2]).tolist() == [OPEN, S0 + 1, S0 + 2]
  image = VOCAB.image_start
  assert unclosed_block(VOCAB, [image, VOCAB.image_base, 20]).tolist() == []
