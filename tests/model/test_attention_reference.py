"""The XLA attention reference against a hand-written per-head numpy oracle."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mio_jax.model.attention import attention, attention_mask


def numpy_attention(q, k, v, seg, causal):
  """One head at a time, K/V repeated per group, masked softmax in float64."""
  b, t, h, d = q.shape
  groups = h // k.shape[2]
  out = np.zeros((b, t, h, d))
  for bi in range(b):
    for hi in range(h):
      kh, vh = k[bi, :, hi // groups].astype(np.float64), v[bi, :, hi // groups].astype(np.float64)
      s = q[bi, :, hi].astype(np.float64) @ kh.T / np.sqrt(d)
      allowed = seg[bi][:, None] == seg[bi][None, :]
      if causal:
        allowed &= np.tril(np.ones((t, t), bool))
      s = np.where(allowed, s, -np.inf)
      p = np.exp(s - s.max(-1, keepdims=True))
      out[bi, :, hi] = (p / p.sum(-1, keepdims=True)) @ vh
  return out


@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (4, 1), (8, 2)])
@pytest.mark.parametrize("causal", [True, False])
def test_xla_matches_numpy_oracle(heads, kv_heads, causal):
  rng = np.random.default_rng(0)
  b, t, d = 2, 13, 8
  q = rng.normal(size=(b, t, heads, d)).astype(np.float32)
  k = rng.normal(size=(b, t, kv_heads, d)).astype(np.float32)
  v = rng.normal(size=(b, t, kv_heads, d)).astype(np.float32)
  seg = np.array([[1] * 5 + [2] * 6 + [0] * 2, [1] * 13], np.int32)
  with jax.default_matmul_precision("highest"):
    got = attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), jnp.asarray(seg), causal=causal, impl="xla")
  np.testing.assert_allclose(np.asarray(got), numpy_attention(q, k, v, seg, causal), atol=1e-5)


def test_mask_blocks_other_segments_and_future():
  seg = jnp.array([[1, 1, 2, 2, 0]])
  mask = np.asarray(attention_mask(seg, seg, causal=True))[0]
  expected = np.array([[1, 0, 0, 0, 0],
                       [1, 1, 0, 0, 0],
                       [0, 0, 1, 0, 0],
                       [0, 0, 1, 1, 0],
                       [0, 0, 0, 0, 1]], bool)
  np.testing.assert_array_equal(mask, expected)


def test_unknown_impl_is_rejected():
  x = jnp.zeros((1, 4, 2, 8))
  with pytest.raises(ValueError, match="unknown attention implementation 'nope'"):
    attention(x, x, x, jnp.ones((1, 4), jnp.int32), impl="nope")


@pytest.mark.slow  # dense and blocked gradients; the fallback case stays
@pytest.mark.parametrize("heads,kv_heads", [(4, 1), pytest.param(8, 2, marks=pytest.mark.slow)])
def test_blocked_matches_numpy_oracle_and_dense_gradients(heads, kv_heads):
  """xla_blocked skips the key blocks above the causal diagonal: same outputs and gradients."""
  rng = np.random.default_rng(1)
  b, t, d = 2, 32, 8  # 8 query blocks of 4; segments cross block edges
  q = jnp.asarray(rng.normal(size=(b, t, heads, d)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(b, t, kv_heads, d)), jnp.float32)
  v = jnp.asarray(rng.normal(size=(b, t, kv_heads, d)), jnp.float32)
  seg = np.array([[1] * 7 + [2] * 13 + [3] * 9 + [0] * 3, [1] * 32], np.int32)
  w = jnp.asarray(rng.normal(size=(b, t, heads, d)), jnp.float32)
  with jax.default_matmul_precision("highest"):
    got = attention(q, k, v, jnp.asarray(seg), causal=True, impl="xla_blocked")
    np.testing.assert_allclose(np.asarray(got), numpy_attention(*map(np.asarray, (q, k, v)), seg, True),
                               atol=1e-5)
    grads = {impl: jax.grad(lambda q, k, v: jnp.sum(attention(q, k, v, jnp.asarray(seg), impl=impl) * w),
                            argnums=(0, 1, 2))(q, k, v) for impl in ("xla", "xla_blocked")}
  for dense, blocked in zip(grads["xla"], grads["xla_blocked"]):
    np.testing.assert_allclose(np.asarray(blocked), np.asarray(dense), atol=1e-5)


def test_blocked_falls_back_to_dense_when_lengths_do_not_split():
  rng = np.random.default_rng(2)
  q, k, v = (jnp.asarray(rng.normal(size=(1, 13, 2, 8)), jnp.float32) for _ in range(3))
  seg = jnp.ones((1, 13), jnp.int32)
  for causal in (True, False):
    np.testing.assert_array_equal(np.asarray(attention(q, k, v, seg, causal=causal, impl="xla_blocked")),
                                  np.asarray(attention(q, k, v, seg, causal=causal, impl="xla")))
