"""The chunked loss (model.loss_chunk) against the plain loss over the whole logits: same losses,
per-modality losses, token counts and gradients, with z-loss, a padded vocabulary, and a chunk that
does not divide the length; alone and on an 8-device (fsdp x tensor) mesh.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from mio_jax.model.token_logprobs import cross_entropy
from mio_jax.model.transformer import ModelConfig, Transformer
from mio_jax.parallel.rules import activation_sharding, batch_spec, get_rules
from mio_jax.train.chunked_loss import chunked_token_losses
from mio_jax.train.state import TrainState, model_graphdef_and_axes, state_shardings
from mio_jax.train.step import make_train_step
from mio_jax.train.synthetic_batches import synthetic_row

PLAIN = ModelConfig(vocab_size=64, unpadded_vocab_size=60, embed_dim=32, num_layers=2, num_heads=4,
                    num_kv_heads=2, head_dim=8, mlp_dim=64, dtype="float32", remat_policy="none")
RANGES = {"text": (0, 32), "image": (32, 48), "speech": (48, 60)}


def _batch(rows=8, seq_len=24):
  out = [synthetic_row(3, 0, r, seq_len, 60) for r in range(rows)]
  return {k: jnp.asarray(np.stack([o[k] for o in out])) for k in out[0]}


def test_chunked_token_losses_equal_plain_ones_and_their_gradients():
  rng = np.random.default_rng(0)
  hidden = jnp.asarray(rng.standard_normal((2, 10, 16)), jnp.float32)
  kernel = jnp.asarray(rng.standard_normal((16, 40)), jnp.float32)
  targets = jnp.asarray(rng.integers(0, 37, (2, 10)), jnp.int32)

  def plain(h, k):
    logits = jnp.einsum("bte,ev->btv", h, k)
    logits = jnp.where(jnp.arange(40) < 37, logits, -jnp.inf)  # 3 padded ids
    loss, nll = cross_entropy(logits, targets, z_loss=0.01)
    return loss.sum() + 0.5 * nll.sum(), (loss, nll)

  def chunked(h, k):
    loss, nll = chunked_token_losses(h, k, targets, z_loss=0.01, chunk=4, used_vocab=37)  # 10 = 4+4+2
    return loss.sum() + 0.5 * nll.sum(), (loss, nll)

  with jax.default_matmul_precision("highest"):
    (v1, aux1), g1 = jax.value_and_grad(plain, argnums=(0, 1), has_aux=True)(hidden, kernel)
    (v2, aux2), g2 = jax.value_and_grad(chunked, argnums=(0, 1), has_aux=True)(hidden, kernel)
  np.testing.assert_allclose(v2, v1, rtol=1e-6)
  for a, b in zip(aux1 + g1, aux2 + g2):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def _run_step(cfg, batch, mesh=None):
  graphdef, _, axes = model_graphdef_and_axes(cfg)
  params = nnx.to_pure_dict(nnx.state(Transformer(cfg, rngs=nnx.Rngs(1)), nnx.Param))
  tx = optax.sgd(1.0)  # new params - old = minus the gradient
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))
  step = make_train_step(graphdef, tx, lambda s: 1.0, modality_ranges=RANGES, z_loss=1e-3)
  if mesh is None:
    new, metrics = jax.jit(step)(state, batch)
  else:
    rules = get_rules("fsdp")
    shardings = state_shardings(mesh, rules, axes, tx, jax.eval_shape(lambda: state))
    batch_sh = NamedSharding(mesh, batch_spec())
    with jax.set_mesh(mesh), activation_sharding(mesh, rules):
      new, metrics = jax.jit(step, in_shardings=(shardings, batch_sh), out_shardings=(shardings, None))(
          jax.device_put(state, shardings), jax.device_put(batch, batch_sh))
  return jax.device_get(metrics), jax.device_get(jax.tree.map(lambda a, b: a - b, new.params, params))


@pytest.mark.slow  # train-step compiles; the chunked losses and gradients stay
@pytest.mark.parametrize("on_mesh", [False, True])
def test_train_step_with_chunked_loss_equals_plain(on_mesh):
  mesh = Mesh(np.array(jax.devices()).reshape(1, 4, 2), ("data", "fsdp", "tensor")) if on_mesh else None
  batch = _batch()
  batch["loss_mask"] = batch["loss_mask"].at[:, :5].set(0.0)
  with jax.default_matmul_precision("highest"):
    m_plain, g_plain = _run_step(PLAIN, batch, mesh)
    m_chunk, g_chunk = _run_step(dataclasses.replace(PLAIN, loss_chunk=7), batch, mesh)  # 24 = 7+7+7+3
  assert set(m_plain) == set(m_chunk)
  for key in m_plain:
    np.testing.assert_allclose(m_chunk[key], m_plain[key], rtol=2e-5, err_msg=key)
  assert m_plain["tokens_image"] > 0 and m_plain["tokens_speech"] > 0  # every modality present
  for a, b in zip(jax.tree.leaves(g_plain), jax.tree.leaves(g_chunk)):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-7)
  assert np.abs(g_plain["lm_head"]).max() > 1e-4
