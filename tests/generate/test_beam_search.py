"""Beam search against transformers' `generate(num_beams=k, do_sample=False, ...)` (what MIO's infer.py
runs) on a tiny random Llama with the same weights as ours: text with repetition and length
penalties, and MIO's block layouts through a `prefix_allowed_tokens_fn` written here from the
layout rules, independently of mio_jax/generate/constraints.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from hf_tiny import tiny_pair
from mio_jax.generate.beam import beam_search
from mio_jax.generate.constraints import Layout
from mio_jax.generate.decode import generate
from mio_jax.vocab import Vocabulary

# 40 text ids, 6 tags (<spch> 43, </spch> 41, <image> 45, </image> 44), 8 image codes, 4 x 4 speech codes.
VOCAB = Vocabulary(text_size=40, image_codes=8, speech_codebook=4, speech_layers=4)
IMAGE_TOKENS, FRAMES = 3, 2
LAYOUT = Layout.from_vocab(VOCAB, IMAGE_TOKENS, FRAMES)
STOPS = (VOCAB.eos, VOCAB.im_end)
PROMPT = [1, 5, 9, 12, 3]


@pytest.fixture(scope="module")
def models():
  return tiny_pair(VOCAB.size)


def hf_beams(hf, prompt, *, num_beams, new, stops, penalty=1.0, length_penalty=1.0, allowed=None):
  """transformers' finished beams (new ids up to and including the stop id) and their scores."""
  with torch.no_grad():
    r = hf.generate(torch.as_tensor([prompt]), num_beams=num_beams, do_sample=False, max_new_tokens=new,
                    repetition_penalty=penalty, length_penalty=length_penalty, eos_token_id=list(stops),
                    pad_token_id=0, num_return_sequences=num_beams, output_scores=True,
                    return_dict_in_generate=True, early_stopping=False, prefix_allowed_tokens_fn=allowed)
  return [cut(s[len(prompt):], stops) for s in r.sequences.tolist()], r.sequences_scores.numpy(), len(r.scores)


def cut(ids, stops):
  ids = list(ids)
  for k, i in enumerate(ids):
    if i in stops:
      return ids[:k + 1]
  return ids


def check_ours(ours, prompt, expected, *, num_beams, new, stops, **kw):
  seqs, scores, _ = expected
  ids, got = beam_search(ours, prompt, num_beams=num_beams, max_new_tokens=new, stop_ids=stops, **kw)
  ids = np.asarray(ids).tolist()
  assert cut(ids, stops) == seqs[0]
  assert ids[len(seqs[0]):] == [seqs[0][-1]] * (new - len(seqs[0]))  # the stop id repeats after it
  np.testing.assert_allclose(np.asarray(got), scores, rtol=0, atol=2e-5)
  return ids


# Stop ids the tiny model reaches at different lengths (2 to 10 new ids): finished beams compete.
TEXT_STOPS, TEXT_NEW = (VOCAB.eos, VOCAB.im_end, 22, 59), 12


@pytest.mark.parametrize("penalty, length_penalty", [
    (1.0, 1.0),   # MIO's text setting
    (1.15, 1.0),  # MIO's image generation and speech-to-speech penalty
    (2.0, 0.5),   # speech generation's 2.0; here transformers' early-stop heuristic ends the search
    (1.15, 0.0),
])
def test_text_beams_equal_transformers(models, penalty, length_penalty):
  hf, ours = models
  expected = hf_beams(hf, PROMPT, num_beams=5, new=TEXT_NEW, stops=TEXT_STOPS, penalty=penalty,
                      length_penalty=length_penalty)
  check_ours(ours, PROMPT, expected, num_beams=5, new=TEXT_NEW, stops=TEXT_STOPS, repetition_penalty=penalty,
             length_penalty=length_penalty)
  assert len({len(s) for s in expected[0]}) > 1  # beams of different lengths were ranked
  if (penalty, length_penalty) == (2.0, 0.5):
    assert expected[2] < TEXT_NEW  # transformers stopped early: the heuristic is really exercised


def layout_allowed(seq):
  """The ids allowed after `seq` (prompt + new ids) under MIO's layouts, from the rules as written in
  docs/generation.md: text (no code ids, no closing tags); an image block holds IMAGE_TOKENS image codes
  then `</image>`; a speech block n layer-0 codes (1 <= n <= FRAMES), then n of each later layer, then
  `</spch>`."""
  seq = list(seq)
  code_lo = min(VOCAB.image_base, VOCAB.speech_base)
  codes = set(range(code_lo, code_lo + VOCAB.image_codes + 4 * VOCAB.speech_codebook))
  opener = None
  for k, t in enumerate(seq):
    if opener is None and t in (VOCAB.image_start, VOCAB.speech_start):
      opener = k
    elif opener is not None and t in (VOCAB.image_end, VOCAB.speech_end):
      opener = None
  if opener is None:
    return [i for i in range(VOCAB.size) if i not in codes and i not in (VOCAB.image_end, VOCAB.speech_end)]
  body = seq[opener + 1:]
  if seq[opener] == VOCAB.image_start:
    return list(range(*VOCAB.code_range("image"))) if len(body) < IMAGE_TOKENS else [VOCAB.image_end]
  layer_ids = lambda layer: list(range(*VOCAB.code_range("speech", layer)))
  runs = []  # [layer, count] of each part so far
  for t in body:
    layer = (t - VOCAB.speech_base) // VOCAB.speech_codebook
    if runs and runs[-1][0] == layer:
      runs[-1][1] += 1
    else:
      runs.append([layer, 1])
  if not runs:
    return layer_ids(0)
  if len(runs) == 1:
    return (layer_ids(0) if runs[0][1] < FRAMES else []) + layer_ids(1)
  (_, n), (layer, count) = runs[0], runs[-1]
  if count < n:
    return layer_ids(layer)
  return [VOCAB.speech_end] if layer == 3 else layer_ids(layer + 1)


@pytest.mark.parametrize("prompt", [
    [1, 5, 9, VOCAB.image_start],   # inside an image block from the start
    [1, 5, 9, VOCAB.speech_start],  # inside a speech block from the start
    [1, 6, 34, 24],  # text; a finished beam opens an image block on its own
    [1, 12, 12, 28],  # text; a finished beam opens a speech block on its own
])
def test_constrained_beams_equal_transformers_with_the_layout_as_prefix_fn(models, prompt):
  hf, ours = models
  new = 14  # room for a speech block (4 * FRAMES + 1) and text after it
  expected = hf_beams(hf, prompt, num_beams=5, new=new, stops=STOPS, penalty=1.15,
                      allowed=lambda _, ids: layout_allowed(ids.tolist()))
  ids = check_ours(ours, prompt, expected, num_beams=5, new=new, stops=STOPS, repetition_penalty=1.15,
                   layout=LAYOUT)
  seqs = expected[0]
  opened = [s for s in seqs if VOCAB.image_start in s or VOCAB.speech_start in s]
  if prompt[-1] not in (VOCAB.image_start, VOCAB.speech_start):
    assert opened  # some finished beam entered a block on its own
  for s in [ids] + seqs:  # every beam, ours included, follows the layout
    for k in range(len(s)):
      assert s[k] in layout_allowed(prompt + s[:k]), (s, k)


def test_unconstrained_transformers_beams_break_the_layout(models):
  # The same model without the prefix function: the layouts above come from the constraint.
  hf, _ = models
  seqs, _, _ = hf_beams(hf, [1, 5, 9, VOCAB.image_start], num_beams=5, new=9, stops=STOPS, penalty=1.15)
  assert any(s[k] not in layout_allowed([1, 5, 9, VOCAB.image_start] + s[:k])
             for s in seqs for k in range(len(s)))


@pytest.mark.slow  # ~2.5-3 s on 2 cores; beams against transformers stay
def test_one_beam_is_greedy(models):
  _, ours = models
  ids, _ = beam_search(ours, PROMPT, num_beams=1, max_new_tokens=5)
  greedy, _ = generate(ours, jnp.asarray([PROMPT]), key=jax.random.key(0), max_new_tokens=5)
  assert ids.tolist() == greedy[0].tolist()


@pytest.mark.slow  # ~2.5-3 s on 2 cores; beams against transformers stay
def test_stop_after_media_ends_beams_at_the_closing_tag(models):
  _, ours = models
  prompt = [1, 5, 9, VOCAB.image_start]
  ids, _ = beam_search(ours, prompt, num_beams=5, max_new_tokens=9, stop_ids=STOPS, layout=LAYOUT,
                       stop_after_media=True, repetition_penalty=1.15)
  ids = np.asarray(ids).tolist()
  assert ids[IMAGE_TOKENS:] == [VOCAB.image_end] * (9 - IMAGE_TOKENS)
  with pytest.raises(ValueError, match="repetition_penalty"):
    beam_search(ours, prompt, num_beams=2, max_new_tokens=2, repetition_penalty=(1.0, 2.0))
