"""Captioning (CIDEr-D, BLEU-4) and ASR (WER, CER) scores of generated texts against references.

    caption_scores(["a red circle"], [["a red circle on white"]])  # {"cider_d": ..., "bleu_4": ...}
    asr_scores(["hello word"], ["hello world"])                    # {"wer": 0.5, "cer": 0.0909...}

The scorers are the well-kept ones: pycocoevalcap's Cider (the COCO server's CIDEr-D: tf-idf n-grams
1-4, clipped counts, a Gaussian length penalty with sigma 6, times 10) and Bleu (corpus BLEU-4,
closest reference length), and jiwer's WER and CER. They come with the `eval` extra
(`pip install -e '.[eval]'`); training never imports this module.

Both sides are normalised the same way first (`normalize`): lower case, every character that is not a
letter, digit or in-word apostrophe becomes a space. This stands in for the COCO PTBTokenizer (which
needs Java, and also drops punctuation) and for the usual ASR normalisation; scores from another
tokenizer can differ slightly.
"""

from __future__ import annotations

import re

_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")  # letters/digits, apostrophes only inside a word


def normalize(text: str) -> str:
  return " ".join(_WORD.findall(text.lower()))


def _need(module: str):
  try:
    return __import__(module, fromlist=["_"])
  except ImportError:
    raise ImportError(f"task metrics need {module.split('.')[0]}: pip install -e '.[eval]'") from None


def caption_scores(hypotheses: list[str], references: list[list[str]]) -> dict:
  """Corpus CIDEr-D and BLEU-4 of one hypothesis per item against its references, and CIDEr-D per item.

  CIDEr-D's idf comes from the references of the items scored together: it is a corpus measure, and
  a single item (or items that all share their references) scores 0.
  """
  if len(hypotheses) != len(references) or not hypotheses:
    raise ValueError(f"caption_scores: {len(hypotheses)} hypotheses for {len(references)} reference sets")
  cider = _need("pycocoevalcap.cider.cider").Cider()
  bleu = _need("pycocoevalcap.bleu.bleu").Bleu(4)
  res = {i: [normalize(h)] for i, h in enumerate(hypotheses)}
  gts = {i: [normalize(r) for r in refs] for i, refs in enumerate(references)}
  cider_d, per_item = cider.compute_score(gts, res)
  bleus, _ = bleu.compute_score(gts, res, verbose=0)
  return {"cider_d": float(cider_d), "bleu_4": float(bleus[3]), "cider_d_per_item": [float(s) for s in per_item]}


def asr_scores(hypotheses: list[str], references: list[str]) -> dict:
  """Corpus WER (word edits over reference words) and CER (character edits, spaces included, over
  reference characters), with the edit counts behind WER."""
  if len(hypotheses) != len(references) or not hypotheses:
    raise ValueError(f"asr_scores: {len(hypotheses)} hypotheses for {len(references)} references")
  jiwer = _need("jiwer")
  refs = [normalize(r) for r in references]
  empty = [i for i, r in enumerate(refs) if not r]
  if empty:
    raise ValueError(f"asr_scores: reference {empty[0]} ({references[empty[0]]!r}) has no words")
  hyps = [normalize(h) for h in hypotheses]
  words = jiwer.process_words(refs, hyps)
  return {"wer": float(words.wer), "cer": float(jiwer.cer(refs, hyps)),
          "substitutions": words.substitutions, "deletions": words.deletions, "insertions": words.insertions,
          "reference_words": sum(len(r.split()) for r in refs)}
