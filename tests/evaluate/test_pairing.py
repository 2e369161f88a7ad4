"""Learning-evidence scoring (mio_jax/evaluate/pairing.py) against per-sequence numpy losses."""

import os

import numpy as np
import pytest
from flax import nnx

from mio_jax.data.shards import Sample
from mio_jax.evaluate import pairing
from mio_jax.model.transformer import ModelConfig, Transformer
from mio_jax.vocab import Vocabulary

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VOCAB = Vocabulary.from_config(dict(text_model=os.path.join(ROOT, "data", "vocab", "mini.model"),
                                    image_codes=16, speech_codebook=8, speech_layers=4,
                                    code_order="image_first"))


def _image(i, caption):
  codes = (np.arange(4).reshape(2, 2) + i) % 16
  return Sample("image_text", [{"type": "image", "codes": codes}, {"type": "text", "text": caption}], f"img:{i}")


def _speech(i, transcript, frames):
  codes = (np.arange(8 * frames).reshape(8, frames) * (i + 1)) % 8
  return Sample("speech_text", [{"type": "speech", "codes": codes}, {"type": "text", "text": transcript}],
                f"spch:{i}")


SAMPLES = [_image(0, "a red circle"), _image(1, "a blue square on a white background"), _image(2, "a red circle"),
           _speech(0, "count to six", 3), _speech(1, "hello, how are you today", 5)]


@pytest.fixture(scope="module")
def model():
  cfg = ModelConfig(vocab_size=VOCAB.size, embed_dim=32, num_layers=2, num_heads=4, num_kv_heads=2,
                    head_dim=8, mlp_dim=64, dtype="float32", remat_policy="none")
  return Transformer(cfg, rngs=nnx.Rngs(3))


def _numpy_loss(model, ids, weights):
  """One unpadded sequence: mean over weighted positions of -log softmax(logits)[next id]."""
  ids = np.asarray(ids)
  n = len(ids)
  logits = np.asarray(model(ids[None, :-1], np.ones((1, n - 1), np.int32), np.arange(n - 1)[None]), np.float64)[0]
  logp = logits - logits.max(-1, keepdims=True)
  logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
  nll = -logp[np.arange(n - 1), ids[1:]]
  return float((nll * weights[1:]).sum() / weights[1:].sum())


def test_scored_tokens_are_the_text_and_eos_after_the_media():
  for sample in SAMPLES:
    ids, weights = pairing.scored_tokens(sample, VOCAB, stage=1)
    scored = ids[weights > 0]
    text = next(p["text"] for p in sample.parts if p["type"] == "text")
    assert scored[-1] == VOCAB.eos
    assert VOCAB.decode(scored[:-1].tolist()).strip() == text
    end = VOCAB.image_end if sample.kind == "image_text" else VOCAB.speech_end
    assert np.flatnonzero(ids == end)[0] < np.flatnonzero(weights)[0]  # all media precede the text


def test_partners_skip_samples_with_the_same_text():
  images = SAMPLES[:3]
  assert pairing.mismatched_partners(images) == [1, 2, 1]  # 0 -> 1; 2 skips 0 (same caption) -> 1
  with pytest.raises(ValueError, match="img:0"):
    pairing.mismatched_partners([images[0], images[2]])


def test_padded_batch_losses_equal_one_sequence_at_a_time(model):
  sequences = [pairing.scored_tokens(s, VOCAB, stage=1) for s in SAMPLES]
  batched = pairing.sequence_losses(model, sequences)
  alone = [_numpy_loss(model, ids, w) for ids, w in sequences]
  np.testing.assert_allclose(batched, alone, rtol=1e-5)


def test_pairing_losses_score_real_and_swapped_media(model):
  results = {r.kind: r for r in pairing.pairing_losses(model, VOCAB, SAMPLES, stage=1)}
  assert set(results) == {"image_text", "speech_text"}
  images = SAMPLES[:3]
  real = [_numpy_loss(model, *pairing.scored_tokens(s, VOCAB, 1)) for s in images]
  swapped = []
  for s, j in zip(images, pairing.mismatched_partners(images)):
    other = dict(images[j].parts[0])
    swapped.append(_numpy_loss(model, *pairing.scored_tokens(
        Sample(s.kind, [other, s.parts[1]], s.source), VOCAB, 1)))
  r = results["image_text"]
  assert r.samples == 3
  np.testing.assert_allclose([r.real, r.mismatched], [np.mean(real), np.mean(swapped)], rtol=1e-5)
  wins = np.mean(np.asarray(real) < np.asarray(swapped))
  assert r.wins == pytest.approx(wins)
  gaps = np.asarray(swapped) - np.asarray(real)
  assert r.margin_stderr == pytest.approx(gaps.std(ddof=1) / np.sqrt(3), rel=1e-4, abs=1e-6)
  # The line the demo prints, from the numpy losses.
  assert r.line() == (f"image_text     3 held-out: real {np.mean(real):.3f}, mismatched {np.mean(swapped):.3f} "
                      f"nats/token, margin {np.mean(swapped) - np.mean(real):+.3f}, real lower in {wins:.0%}")
