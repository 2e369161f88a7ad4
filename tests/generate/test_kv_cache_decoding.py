"""Cached decoding (prefill + one token at a time) against full forward passes of the same model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mio_jax.generate.decode import generate, init_cache, prompt_inputs
from mio_jax.model.transformer import ModelConfig, Transformer

# GQA: 4 query heads share 2 KV heads.
CFG = ModelConfig(vocab_size=61, embed_dim=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8,
                  mlp_dim=64, dtype="float32", remat_policy="none")


def full_logits(model, ids):
  ids = jnp.asarray(ids, jnp.int32)[None]
  seg = jnp.ones_like(ids)
  pos = jnp.arange(ids.shape[1], dtype=jnp.int32)[None]
  return model(ids, seg, pos)[0]


def test_cached_logits_equal_full_forward():
  model = Transformer(CFG, rngs=nnx.Rngs(0))
  seq = np.random.default_rng(0).integers(0, CFG.vocab_size, 12)
  reference = full_logits(model, seq)
  prompt_len = 5
  cache = init_cache(CFG, 1, 16)
  ids = jnp.asarray(seq[:prompt_len], jnp.int32)[None]
  logits, cache = model.decode(ids, jnp.ones_like(ids), jnp.arange(prompt_len)[None], cache)
  np.testing.assert_allclose(logits[0], reference[:prompt_len], atol=1e-5, rtol=0)
  step = jax.jit(lambda m, t, p, c: m.decode(t, jnp.ones_like(t), p, c))
  for i in range(prompt_len, len(seq)):  # seven single-token steps
    logits, cache = step(model, jnp.asarray([[seq[i]]], jnp.int32), jnp.asarray([[i]]), cache)
    np.testing.assert_allclose(logits[0, 0], reference[i], atol=1e-5, rtol=0)
  assert int(cache["index"]) == len(seq)


@pytest.mark.slow  # ~3.5-4 s on 2 cores; cached logits against the full forward stay
def test_left_padded_row_decodes_as_alone():
  model = Transformer(CFG, rngs=nnx.Rngs(1))
  short, long = [3, 4, 5], [7, 8, 9, 10, 11]
  prompt = jnp.asarray([[0, 0] + short, long], jnp.int32)
  lengths = jnp.asarray([3, 5])
  seg, pos = prompt_inputs(prompt, lengths)
  logits, _ = model.decode(prompt, seg, pos, init_cache(CFG, 2, 8))
  np.testing.assert_allclose(logits[0, 2:], full_logits(model, short), atol=1e-5, rtol=0)
  np.testing.assert_allclose(logits[1], full_logits(model, long), atol=1e-5, rtol=0)


@pytest.mark.slow  # one full forward a token; cached-logits stays
def test_greedy_generation_equals_repeated_full_argmax():
  model = Transformer(CFG, rngs=nnx.Rngs(2))
  prompt = [1, 17, 33, 5]
  new = 8
  out, done = generate(model, jnp.asarray([prompt]), key=jax.random.key(0), max_new_tokens=new)
  seq = list(prompt)
  for _ in range(new):  # oracle: a full forward over the whole sequence each step
    seq.append(int(jnp.argmax(full_logits(model, seq)[-1])))
  assert out[0].tolist() == seq[len(prompt):]
  assert not bool(done[0])


@pytest.mark.slow  # ~3.5-4 s on 2 cores; cached logits against the full forward stay
def test_generation_stops_on_stop_id_and_pads_with_it():
  model = Transformer(CFG, rngs=nnx.Rngs(2))
  prompt = [1, 17, 33, 5]
  free, _ = generate(model, jnp.asarray([prompt]), key=jax.random.key(0), max_new_tokens=6)
  stop = int(free[0, 2])
  first = free[0].tolist().index(stop)
  out, done = generate(model, jnp.asarray([prompt]), key=jax.random.key(0), max_new_tokens=6,
                       stop_ids=(stop,))
  assert bool(done[0])
  assert out[0, :first + 1].tolist() == free[0, :first + 1].tolist()
  assert set(out[0, first:].tolist()) == {stop}


@pytest.mark.slow  # one full forward a token
def test_greedy_with_repetition_penalty_equals_penalised_full_argmax():
  from mio_jax.generate.decode import Settings
  model = Transformer(CFG, rngs=nnx.Rngs(2))
  prompt, new, penalty = [1, 17, 33, 5], 8, 3.0
  out, _ = generate(model, jnp.asarray([prompt]), key=jax.random.key(0), max_new_tokens=new,
                    settings=Settings(text_penalty=penalty))
  seq = list(prompt)
  for _ in range(new):  # numpy oracle of the rule: seen logits / p if > 0 else * p
    logits = np.asarray(full_logits(model, seq)[-1], np.float64)
    seen = np.isin(np.arange(CFG.vocab_size), seq)
    logits = np.where(seen, np.where(logits > 0, logits / penalty, logits * penalty), logits)
    seq.append(int(np.argmax(logits)))
  assert out[0].tolist() == seq[len(prompt):]
  assert len(set(seq[len(prompt):])) > len(set(
      generate(model, jnp.asarray([prompt]), key=jax.random.key(0), max_new_tokens=new)[0][0].tolist()))
