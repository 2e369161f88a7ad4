"""A vocabulary padded for the hardware: the padded ids change no loss, no gradient and no choice.

Oracle: the same weights in an unpadded model (the padded model's first rows/columns). The padded
rows are made large on purpose, so a padded id would win everywhere were it not masked.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from configs import base
from mio_jax.evaluate.pairing import sequence_losses
from mio_jax.generate.beam import beam_search
from mio_jax.generate.decode import Settings, generate
from mio_jax.model.transformer import ModelConfig, Transformer
from mio_jax.model.vocab_padding import mask_padded_logits, padded_vocab_size
from mio_jax.train.state import TrainState
from mio_jax.train.step import make_train_step
from mio_jax.train.validate import ConfigError, validate

USED = 50
PLAIN = ModelConfig(vocab_size=USED, embed_dim=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8,
                    mlp_dim=64, dtype="float32", remat_policy="none")
PADDED = dataclasses.replace(PLAIN, vocab_size=64, unpadded_vocab_size=USED)


def test_padded_sizes():
  assert padded_vocab_size(76294) == 76800  # MIO-7B: 75 x 1024
  assert padded_vocab_size(1024) == 1024 and padded_vocab_size(1025) == 2048
  assert padded_vocab_size(13294, 128) == 13312
  for tensor in (1, 2, 4, 8):
    assert (76800 // tensor) % 128 == 0


def _padded_and_plain_params(seed=0):
  """A padded model's params with large padding rows, and the same weights without them."""
  padded = nnx.to_pure_dict(nnx.state(Transformer(PADDED, rngs=nnx.Rngs(seed)), nnx.Param))
  padded["lm_head"] = padded["lm_head"].at[:, USED:].set(30.0)
  padded["embed"]["table"] = padded["embed"]["table"].at[USED:].set(30.0)
  plain = jax.tree.map(lambda x: x, padded)
  plain["lm_head"] = padded["lm_head"][:, :USED]
  plain["embed"]["table"] = padded["embed"]["table"][:USED]
  return padded, plain


def _model(cfg, params):
  graphdef, state = nnx.split(nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0))))
  nnx.replace_by_pure_dict(state, params)
  return nnx.merge(graphdef, state)


def _batch(rng, batch=2, length=12):
  ids = rng.integers(0, USED, (batch, length + 1)).astype(np.int32)
  return {"inputs": jnp.asarray(ids[:, :-1]), "targets": jnp.asarray(ids[:, 1:]),
          "segment_ids": jnp.ones((batch, length), jnp.int32),
          "positions": jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length)),
          "loss_mask": jnp.ones((batch, length), jnp.float32)}


@pytest.mark.slow  # two models' gradients; the mask cases stay
def test_logits_mask_and_loss_and_gradients_equal_the_unpadded_model():
  padded, plain = _padded_and_plain_params()
  batch = _batch(np.random.default_rng(0))
  args = (batch["inputs"], batch["segment_ids"], batch["positions"])
  logits = _model(PADDED, padded)(*args)
  np.testing.assert_allclose(logits[..., :USED], _model(PLAIN, plain)(*args), rtol=1e-6, atol=1e-6)
  assert float(logits[..., USED:].max()) == float(jnp.finfo(jnp.float32).min)

  tx = optax.sgd(1.0)
  results = {}
  for name, cfg, params in (("padded", PADDED, padded), ("plain", PLAIN, plain)):
    graphdef = nnx.split(nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0))))[0]
    step = make_train_step(graphdef, tx, lambda s: 1.0, modality_ranges={"text": (0, USED)}, z_loss=1e-3)
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))
    new, metrics = jax.jit(step)(state, batch)
    # SGD with lr 1: new - old is minus the gradient.
    results[name] = (metrics, jax.tree.map(lambda a, b: a - b, new.params, params))
  (m_pad, g_pad), (m_plain, g_plain) = results["padded"], results["plain"]
  for key in ("loss", "grad_norm", "loss_text"):
    np.testing.assert_allclose(m_pad[key], m_plain[key], rtol=1e-5)
  assert np.all(np.asarray(g_pad["lm_head"][:, USED:]) == 0)  # no gradient reaches the padding
  assert np.all(np.asarray(g_pad["embed"]["table"][USED:]) == 0)
  np.testing.assert_allclose(g_pad["lm_head"][:, :USED], g_plain["lm_head"], rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(g_pad["blocks"]["mlp"]["up"], g_plain["blocks"]["mlp"]["up"], rtol=1e-4, atol=1e-7)


def test_mask_with_offset_masks_only_ids_past_used():
  logits = jnp.zeros((2, 8))
  out = mask_padded_logits(logits, used=13, offset=8)  # ids 8..15: 13, 14, 15 are padding
  assert (np.asarray(out[0]) == 0).tolist() == [True] * 5 + [False] * 3


@pytest.mark.slow  # sampling and beam compiles; the pairing and mask cases stay
def test_sampling_and_beam_search_never_pick_a_padded_id():
  padded, plain = _padded_and_plain_params(seed=3)
  model, plain_model = _model(PADDED, padded), _model(PLAIN, plain)
  prompt = jnp.asarray([[1, 5, 9, 2]], jnp.int32)
  hot = Settings(text_temperature=2.0, text_top_p=1.0)
  for settings in (Settings(), hot):
    ids, _ = generate(model, prompt, key=jax.random.key(0), max_new_tokens=24, settings=settings)
    assert int(ids.max()) < USED
    same, _ = generate(plain_model, prompt, key=jax.random.key(0), max_new_tokens=24, settings=settings)
    assert ids.tolist() == same.tolist()  # the padded model decodes as the unpadded one
  beams, scores = beam_search(model, [1, 5, 9], num_beams=3, max_new_tokens=6)
  plain_beams, plain_scores = beam_search(plain_model, [1, 5, 9], num_beams=3, max_new_tokens=6)
  assert int(beams.max()) < USED and beams.tolist() == plain_beams.tolist()
  np.testing.assert_allclose(scores, plain_scores, rtol=1e-5)


def test_pairing_score_gives_padded_ids_no_probability():
  padded, plain = _padded_and_plain_params(seed=4)
  rng = np.random.default_rng(1)
  sequences = [(rng.integers(0, USED, n).astype(np.int32), np.ones(n, np.float32)) for n in (9, 14)]
  np.testing.assert_allclose(sequence_losses(_model(PADDED, padded), sequences),
                             sequence_losses(_model(PLAIN, plain), sequences), rtol=1e-5)


def test_validate_checks_the_unpadded_size_and_mio7b_splits_over_tensor_4():
  c = base.stage_config(2)
  c.mesh.ici.update(fsdp=2, tensor=4)
  assert validate(c, jax.devices())["tensor"] == 4  # 76,800 ids split 4 ways (76,294 did not)
  c.model.unpadded_vocab_size = 76295
  with pytest.raises(ConfigError, match=r"^config.model.unpadded_vocab_size=76295 disagrees"):
    validate(c, jax.devices())
  c.model.update(unpadded_vocab_size=76294, vocab_size=76000)
  with pytest.raises(ConfigError, match=r"^config.model.vocab_size=76000 is smaller"):
    validate(c, jax.devices())
