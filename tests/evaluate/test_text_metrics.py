"""CIDEr-D, BLEU-4, WER and CER (mio_jax/evaluate/text_metrics.py) against cases worked by hand."""

import math

import pytest

from mio_jax.evaluate.text_metrics import asr_scores, caption_scores, normalize

LN2 = math.log(2)


def test_normalize_lowercases_and_drops_punctuation_but_keeps_in_word_apostrophes():
  assert normalize("The cat's hat, isn't it?  'Quoted' 3-D a_b") == "the cat's hat isn't it quoted 3 d a b"
  assert normalize("...") == ""


def test_cider_d_identical_captions_score_the_mean_of_four_cosines_times_ten():
  # Two items: "a" is in both items' references, so its idf is log(2/2) = 0; every other n-gram's
  # is log(2/1). A hypothesis equal to its reference has cosine 1 at n = 1, 2, 3 and no 4-grams
  # (cosine 0): CIDEr-D = 10 * (1 + 1 + 1 + 0) / 4 = 7.5, no length penalty.
  scores = caption_scores(["A red circle.", "a blue square"], [["a red circle"], ["a blue square"]])
  assert scores["cider_d_per_item"] == pytest.approx([7.5, 7.5])
  assert scores["cider_d"] == pytest.approx(7.5)


def test_cider_d_length_penalty():
  # "red" against "a red circle": unigram tf-idf vectors {red: ln2} and {a: 0, red: ln2, circle: ln2},
  # cosine ln2^2 / (ln2 * sqrt(2) ln2) = 1/sqrt(2); no 2-, 3- or 4-grams in the hypothesis.
  # Length 1 vs 3: penalty exp(-(1 - 3)^2 / (2 * 6^2)) = exp(-1/18).
  scores = caption_scores(["red", "a blue square"], [["a red circle"], ["a blue square"]])
  expected = 10 * (1 / math.sqrt(2)) / 4 * math.exp(-1 / 18)
  assert expected == pytest.approx(1.6722, abs=1e-4)
  assert scores["cider_d_per_item"][0] == pytest.approx(expected)
  assert scores["cider_d"] == pytest.approx((expected + 7.5) / 2)


def test_cider_d_clips_repeated_words():
  # "red red red": tf 3 gives the vector {red: 3 ln2}; the clipped dot product is min(3 ln2, ln2) * ln2,
  # over norms 3 ln2 and sqrt(2) ln2: 1 / (3 sqrt(2)) (unclipped it would be 1/sqrt(2)). "red red" is
  # in no reference. Same length as the reference: no penalty.
  scores = caption_scores(["red red red", "a blue square"], [["a red circle"], ["a blue square"]])
  assert scores["cider_d_per_item"][0] == pytest.approx(10 * (1 / (3 * math.sqrt(2))) / 4)


def test_cider_d_of_a_single_item_is_zero_every_ngram_has_idf_zero():
  assert caption_scores(["a red circle"], [["a red circle"]])["cider_d"] == 0.0


def test_bleu_4_precisions_and_brevity_penalty():
  # "the cat sat on a mat" vs "the cat sat on the mat": matched 1-grams 5/6, 2-grams 3/5
  # (the cat, cat sat, sat on), 3-grams 2/4, 4-grams 1/3; same length: BLEU-4 = (1/12)^(1/4).
  assert caption_scores(["the cat sat on a mat"], [["the cat sat on the mat"]])["bleu_4"] == pytest.approx(
      (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25, rel=1e-6)
  # "the cat sat on": every n-gram matches; 4 words for 6: brevity penalty exp(1 - 6/4).
  assert caption_scores(["the cat sat on"], [["the cat sat on the mat"]])["bleu_4"] == pytest.approx(
      math.exp(-0.5), rel=1e-6)
  # Corpus BLEU pools matches over items: 1-grams 5 + 4 of 6 + 4, 2-grams 3 + 3 of 5 + 3,
  # 3-grams 2 + 2 of 4 + 2, 4-grams 1 + 1 of 3 + 1; lengths 10 against 6 + 6.
  both = caption_scores(["the cat sat on a mat", "the dog ran far"],
                        [["the cat sat on the mat"], ["the dog ran far away now"]])
  assert both["bleu_4"] == pytest.approx((9 / 10 * 6 / 8 * 4 / 6 * 2 / 4) ** 0.25 * math.exp(1 - 12 / 10), rel=1e-6)


def test_wer_and_cer_count_edits_over_the_reference():
  # "the cat sat on the mat" -> "the cat sit on mat": sat->sit (substitution), "the" deleted:
  # 2 of 6 words. Characters (spaces count): a->i and "the " deleted, 5 of 22.
  scores = asr_scores(["The cat sit on mat."], ["the cat sat on the mat"])
  assert scores["wer"] == pytest.approx(2 / 6)
  assert scores["cer"] == pytest.approx(5 / 22)
  assert (scores["substitutions"], scores["deletions"], scores["insertions"]) == (1, 1, 0)
  # Corpus rates pool the edits: 2 + 1 (inserted "please") edits over 6 + 2 words; 5 + 7 characters
  # over 22 + 11 (" please" is 7 characters, "hello there" 11).
  pooled = asr_scores(["the cat sit on mat", "hello there please"], ["the cat sat on the mat", "hello there"])
  assert pooled["wer"] == pytest.approx(3 / 8)
  assert pooled["cer"] == pytest.approx(12 / 33)
  assert pooled["insertions"] == 1 and pooled["reference_words"] == 8


def test_empty_hypothesis_is_all_deletions_and_empty_reference_is_refused():
  assert asr_scores([""], ["one two three"])["wer"] == 1.0
  with pytest.raises(ValueError, match="no words"):
    asr_scores(["x"], ["?!"])
