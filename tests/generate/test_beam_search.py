"""Beam search against a plain-Python beam search over full forward passes (no cache)."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mio_jax.generate.beam import beam_search
from mio_jax.generate.decode import generate
from mio_jax.model.transformer import ModelConfig, Transformer

CFG = ModelConfig(vocab_size=23, embed_dim=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8,
                  mlp_dim=64, dtype="float32", remat_policy="none")
PROMPT = [1, 5, 9]


def log_probs(model, seq):
  ids = jnp.asarray(seq, jnp.int32)[None]
  logits = model(ids, jnp.ones_like(ids), jnp.arange(len(seq))[None])[0, -1]
  return np.asarray(jax.nn.log_softmax(logits.astype(jnp.float32)), np.float64)


def reference_beams(model, beams, steps, stop):
  live = [(0.0, [], False)]
  for _ in range(steps):
    cands = []
    for score, seq, done in live:
      if done:
        cands.append((score, seq + [stop], True))
        continue
      lp = log_probs(model, PROMPT + seq)
      cands += [(score + lp[t], seq + [t], t == stop) for t in range(CFG.vocab_size)]
    live = sorted(cands, key=lambda c: -c[0])[:beams]
  return live


def test_beam_search_matches_python_reference():
  model = Transformer(CFG, rngs=nnx.Rngs(4))
  stop = int(np.argsort(-log_probs(model, PROMPT))[1])  # the runner-up first token: a beam ends early
  ids, scores = beam_search(model, PROMPT, num_beams=3, max_new_tokens=4, stop_ids=(stop,),
                            length_penalty=1.0)
  ref = reference_beams(model, 3, 4, stop)
  assert any(done for _, _, done in ref)  # finished beams really competed
  length = lambda seq: seq.index(stop) + 1 if stop in seq else len(seq)
  ref.sort(key=lambda c: -c[0] / length(c[1]))  # Hugging Face's length-normalised ranking
  assert ids.tolist() == ref[0][1]
  np.testing.assert_allclose(np.asarray(scores), [c[0] for c in ref], atol=1e-4)


def test_one_beam_is_greedy():
  model = Transformer(CFG, rngs=nnx.Rngs(4))
  ids, _ = beam_search(model, PROMPT, num_beams=1, max_new_tokens=5)
  greedy, _ = generate(model, jnp.asarray([PROMPT]), key=jax.random.key(0), max_new_tokens=5)
  assert ids.tolist() == greedy[0].tolist()
