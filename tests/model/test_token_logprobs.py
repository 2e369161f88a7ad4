"""The one next-token log-likelihood (mio_jax/model/token_logprobs.py) against float64 numpy, with a
masked id, the z-loss term and a padded vocabulary; the train step's loss against numpy
cross-entropy of a tiny model's logits (the pairing score and beam search have their own numpy and
plain-Python oracles in tests/evaluate and tests/generate).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from mio_jax.model.token_logprobs import cross_entropy, log_probs
from mio_jax.model.transformer import ModelConfig, Transformer
from mio_jax.model.vocab_padding import mask_padded_logits
from mio_jax.train.state import TrainState
from mio_jax.train.step import make_train_step
from mio_jax.train.synthetic_batches import synthetic_row

RNG = np.random.default_rng(0)
LOGITS = RNG.standard_normal((2, 3, 7)) * 3
ALLOWED = np.arange(7) != 4  # id 4 masked
TARGETS = np.array([[0, 6, 3], [1, 5, 2]])


def _numpy_log_z(logits, allowed):
  x = np.where(allowed, logits, -np.inf)
  m = x.max(-1, keepdims=True)
  return (m + np.log(np.exp(x - m).sum(-1, keepdims=True)))[..., 0]


def test_cross_entropy_and_z_loss_equal_numpy_over_allowed_ids():
  log_z = _numpy_log_z(LOGITS, ALLOWED)
  nll = log_z - np.take_along_axis(LOGITS, TARGETS[..., None], -1)[..., 0]
  loss, got_nll = cross_entropy(jnp.asarray(LOGITS, jnp.float32), jnp.asarray(TARGETS), z_loss=0.1,
                                allowed=jnp.asarray(ALLOWED))
  np.testing.assert_allclose(got_nll, nll, rtol=1e-6)
  np.testing.assert_allclose(loss, nll + 0.1 * log_z**2, rtol=1e-6)
  # The masked id changes the result: without the mask its probability counts in log_z.
  unmasked = _numpy_log_z(LOGITS, np.ones(7, bool))
  assert np.all(unmasked > log_z + 1e-3)
  np.testing.assert_allclose(cross_entropy(jnp.asarray(LOGITS, jnp.float32), jnp.asarray(TARGETS))[1],
                             unmasked - np.take_along_axis(LOGITS, TARGETS[..., None], -1)[..., 0], rtol=1e-6)


def test_bfloat16_logits_are_normalised_in_float32():
  x = jnp.asarray(LOGITS, jnp.bfloat16)
  x64 = np.asarray(x.astype(jnp.float32), np.float64)
  loss, nll = cross_entropy(x, jnp.asarray(TARGETS))
  assert loss.dtype == nll.dtype == jnp.float32
  expected = _numpy_log_z(x64, True) - np.take_along_axis(x64, TARGETS[..., None], -1)[..., 0]
  np.testing.assert_allclose(nll, expected, rtol=1e-6)


def test_log_probs_equal_numpy_and_give_masked_and_padded_ids_nothing():
  got = np.asarray(log_probs(jnp.asarray(LOGITS, jnp.float32), jnp.asarray(ALLOWED)))
  expected = LOGITS - _numpy_log_z(LOGITS, ALLOWED)[..., None]
  np.testing.assert_allclose(got[..., ALLOWED], expected[..., ALLOWED], rtol=1e-5, atol=1e-6)
  assert np.all(got[..., 4] == -np.inf)
  np.testing.assert_allclose(np.exp(got).sum(-1), 1.0, rtol=1e-6)
  # Padded ids (the model's mask, at the dtype's minimum) get probability exactly 0 and never win,
  # even when every real id's logit is far below zero.
  padded = mask_padded_logits(jnp.asarray(LOGITS - 100.0, jnp.float32), used=5)
  lp = np.asarray(log_probs(padded))
  assert np.all(np.exp(lp[..., 5:]) == 0) and np.all(lp.argmax(-1) < 5)
  np.testing.assert_allclose(np.exp(lp).sum(-1), 1.0, rtol=1e-5)  # float32 log-probs near -100


CFG = ModelConfig(vocab_size=64, embed_dim=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8,
                  mlp_dim=64, dtype="float32", remat_policy="none")
RANGES = {"text": (0, 32), "image": (32, 48), "speech": (48, 64)}


def test_train_step_loss_is_numpy_cross_entropy_of_the_model():
  rows = [synthetic_row(5, 0, r, 16, CFG.vocab_size) for r in range(4)]
  batch = {k: jnp.asarray(np.stack([r[k] for r in rows])) for k in rows[0]}
  batch["loss_mask"] = batch["loss_mask"].at[:, :3].set(0.0)
  model = Transformer(CFG, rngs=nnx.Rngs(2))
  with jax.default_matmul_precision("highest"):
    logits = np.asarray(model(batch["inputs"], batch["segment_ids"], batch["positions"]), np.float64)
    graphdef, params = nnx.split(model)
    params = nnx.to_pure_dict(params)
    tx = optax.sgd(0.0)
    step = make_train_step(graphdef, tx, lambda s: 1.0, modality_ranges=RANGES, z_loss=1e-2)
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))
    _, metrics = jax.jit(step)(state, batch)
  targets, mask = np.asarray(batch["targets"]), np.asarray(batch["loss_mask"], np.float64)
  nll = _numpy_log_z(logits, True) - np.take_along_axis(logits, targets[..., None], -1)[..., 0]
  np.testing.assert_allclose(metrics["loss"], (nll * mask).sum() / mask.sum(), rtol=1e-5)
  for name, (lo, hi) in RANGES.items():
    m = mask * ((targets >= lo) & (targets < hi))
    assert m.sum() > 0
    np.testing.assert_allclose(metrics[f"loss_{name}"], (nll * m).sum() / m.sum(), rtol=1e-5, err_msg=name)
