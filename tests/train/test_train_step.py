"""The step function alone: accumulation == one batch, masked and per-modality token counts (the loss
against numpy cross-entropy: tests/model/test_token_logprobs.py)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from mio_jax.model.transformer import ModelConfig, Transformer
from mio_jax.train.state import TrainState, make_optimizer
from mio_jax.train.step import make_train_step
from mio_jax.train.synthetic_batches import synthetic_row

CFG = ModelConfig(vocab_size=64, embed_dim=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8,
                  mlp_dim=64, dtype="float32", remat_policy="none")
OPT = ml_collections.ConfigDict(dict(peak_lr=1e-3, warmup_fraction=0.0, final_lr_fraction=1.0, b1=0.9,
                                     b2=0.95, eps=1e-8, weight_decay=0.0, clip_norm=1e9,
                                     schedule="warmup_cosine", decay_fraction=0.0))
RANGES = {"text": (0, 32), "image": (32, 48), "speech": (48, 64)}


def batch(rows, seq_len=24):
  out = [synthetic_row(7, 0, r, seq_len, CFG.vocab_size) for r in range(rows)]
  return {k: jnp.asarray(np.stack([o[k] for o in out])) for k in out[0]}


def _step(accum):
  graphdef, params = nnx.split(Transformer(CFG, rngs=nnx.Rngs(0)))
  params = nnx.to_pure_dict(params)
  tx, schedule = make_optimizer(OPT, 10)
  step = jax.jit(make_train_step(graphdef, tx, schedule, modality_ranges=RANGES, grad_accum_steps=accum))
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))
  return step(state, batch(8))


@pytest.mark.slow  # two train-step compiles
def test_gradient_accumulation_matches_one_big_batch():
  (s1, m1), (s2, m2) = _step(1), _step(4)
  np.testing.assert_allclose(m1["loss"], m2["loss"], rtol=1e-6)
  np.testing.assert_allclose(m1["grad_norm"], m2["grad_norm"], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s2.params)):
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_masked_tokens_and_modality_losses():
  _, m = _step(1)
  b = batch(8)
  assert float(m["tokens"]) == float(b["loss_mask"].sum())
  # Per-modality token counts add up to all counted tokens: the ranges cover the vocabulary.
  counts = [float(((b["targets"] >= lo) & (b["targets"] < hi) & (b["loss_mask"] > 0)).sum())
            for lo, hi in RANGES.values()]
  assert sum(counts) == float(m["tokens"])
  assert all(np.isfinite(float(m[f"loss_{k}"])) for k in RANGES)
