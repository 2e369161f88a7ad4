"""Decoder behaviour: packing isolation, scan == unrolled, remat policies change nothing numerically."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mio_jax.model.transformer import REMAT_POLICIES, ModelConfig, Transformer

CFG = ModelConfig(vocab_size=97, embed_dim=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8,
                  mlp_dim=64, dtype="float32", remat_policy="none")


def packed_inputs(a_tokens, b_tokens, length=16):
  ids = np.zeros((1, length), np.int32)
  seg = np.zeros((1, length), np.int32)
  pos = np.zeros((1, length), np.int32)
  ids[0, :len(a_tokens)] = a_tokens
  seg[0, :len(a_tokens)] = 1
  pos[0, :len(a_tokens)] = np.arange(len(a_tokens))
  end = len(a_tokens) + len(b_tokens)
  ids[0, len(a_tokens):end] = b_tokens
  seg[0, len(a_tokens):end] = 2
  pos[0, len(a_tokens):end] = np.arange(len(b_tokens))
  return jnp.asarray(ids), jnp.asarray(seg), jnp.asarray(pos)


def test_packed_samples_do_not_see_each_other():
  model = Transformer(CFG, rngs=nnx.Rngs(0))
  b = [5, 6, 7, 8, 9]
  logits_1 = model(*packed_inputs([1, 2, 3, 4], b))
  logits_2 = model(*packed_inputs([40, 41, 42, 43], b))
  # Sample B's logits are unchanged when sample A changes ...
  np.testing.assert_allclose(logits_1[0, 4:9], logits_2[0, 4:9], atol=1e-6)
  # ... and equal B's logits alone, since positions restart.
  alone = model(*packed_inputs(b, []))
  np.testing.assert_allclose(logits_1[0, 4:9], alone[0, :5], atol=1e-5)
  # A itself did change (the test can fail).
  assert not np.allclose(logits_1[0, :4], logits_2[0, :4])


def test_scan_matches_unrolled_layers():
  model = Transformer(CFG, rngs=nnx.Rngs(1))
  params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
  unrolled = nnx.merge(nnx.split(Transformer(dataclasses.replace(CFG, scan_layers=False),
                                             rngs=nnx.Rngs(2)))[0], params)
  ids, seg, pos = packed_inputs([1, 2, 3], [4, 5])
  np.testing.assert_allclose(model(ids, seg, pos), unrolled(ids, seg, pos), atol=1e-5)


# Full recompute runs by default (the cheapest to compile); the others, MIO-7B's save_qkv_out
# included (~7 s on 2 cores), in the slow set.
@pytest.mark.parametrize("policy", [
    pytest.param(p, marks=() if p == "full" else pytest.mark.slow)
    for p in REMAT_POLICIES if p != "none"])
def test_remat_policy_keeps_gradients(policy):
  ids, seg, pos = packed_inputs([1, 2, 3], [4, 5, 6, 7])
  graphdef, params = nnx.split(Transformer(CFG, rngs=nnx.Rngs(3)))
  remat_graphdef = nnx.split(Transformer(dataclasses.replace(CFG, remat_policy=policy), rngs=nnx.Rngs(3)))[0]

  def loss(gd, p):
    return jnp.mean(nnx.merge(gd, p)(ids, seg, pos) ** 2)

  g_ref = jax.grad(lambda p: loss(graphdef, p))(params)
  g_remat = jax.grad(lambda p: loss(remat_graphdef, p))(params)
  for a, b in zip(jax.tree.leaves(g_ref), jax.tree.leaves(g_remat)):
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_param_count_formula_matches_model():
  params = nnx.state(Transformer(CFG, rngs=nnx.Rngs(0)), nnx.Param)
  assert sum(x.size for x in jax.tree.leaves(params)) == CFG.num_params()


@pytest.mark.parametrize("stacked", [False, True])
def test_mlp_is_swiglu_of_its_kernels(stacked):
  """Both the plain and the stacked (CPU) gate/up matmuls compute down(silu(x @ gate) * (x @ up))
  (numpy, float64)."""
  from mio_jax.model.layers import MLP
  mlp = MLP(16, 24, dtype=jnp.float32, param_dtype=jnp.float32, stacked_gate_up=stacked,
            rngs=nnx.Rngs(0))
  x = np.random.default_rng(0).normal(size=(2, 5, 16))
  g, u, d = (np.asarray(p[...], np.float64) for p in (mlp.gate, mlp.up, mlp.down))
  a = x @ g
  expected = (a / (1 + np.exp(-a)) * (x @ u)) @ d
  with jax.default_matmul_precision("highest"):
    got = mlp(jnp.asarray(x, jnp.float32))
  np.testing.assert_allclose(np.asarray(got), expected, atol=1e-5)


def test_lm_head_gradients_match_autodiff():
  """lm_head_cpu's hand-ordered backward equals autodiff of the plain matmul."""
  from mio_jax.model.transformer import lm_head_cpu as lm_head
  rng = np.random.default_rng(0)
  hidden = jnp.asarray(rng.normal(size=(2, 5, 16)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(16, 40)), jnp.float32)
  weights = jnp.asarray(rng.normal(size=(2, 5, 40)), jnp.float32)
  plain = lambda h, k: jnp.sum(jnp.einsum("bte,ev->btv", h, k) * weights)
  ours = lambda h, k: jnp.sum(lm_head(h, k) * weights)
  with jax.default_matmul_precision("highest"):
    np.testing.assert_allclose(np.asarray(ours(hidden, kernel)), np.asarray(plain(hidden, kernel)), rtol=1e-6)
    for got, want in zip(jax.grad(ours, (0, 1))(hidden, kernel), jax.grad(plain, (0, 1))(hidden, kernel)):
      np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)


@pytest.mark.slow  # two model compiles with gradients
def test_cpu_tuned_matmuls_change_no_number():
  """The XLA-CPU graph rewrites (stacked gate/up, reordered LM-head backward) give the plain path's
  logits and gradients for the same parameters."""
  ids = jnp.asarray(np.random.default_rng(1).integers(0, CFG.vocab_size, (2, 12)), jnp.int32)
  seg, pos = jnp.ones_like(ids), jnp.broadcast_to(jnp.arange(12), ids.shape)

  def loss_and_grads(cfg):
    model = Transformer(cfg, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model)
    def loss(p):
      return jnp.mean(jax.nn.log_softmax(nnx.merge(graphdef, p)(ids, seg, pos))[..., 0])
    return jax.value_and_grad(loss)(params)

  with jax.default_matmul_precision("highest"):
    plain = loss_and_grads(CFG)
    tuned = loss_and_grads(dataclasses.replace(CFG, cpu_tuned_matmuls=True))
  np.testing.assert_allclose(float(tuned[0]), float(plain[0]), rtol=1e-6)
  for a, b in zip(jax.tree.leaves(tuned[1]), jax.tree.leaves(plain[1])):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
