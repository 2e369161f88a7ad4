"""Shared inputs and comparisons for the kernel tests (the XLA reference is itself tested against
a numpy oracle in tests/model/test_attention_reference.py)."""

import jax
import jax.numpy as jnp
import numpy as np

from mio_jax.model.attention import xla_attention


# Interpret-mode kernels are large XLA programs; compiling them unoptimised halves the test time.
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def make_qkv(seed, b, q_len, kv_len, heads, kv_heads, head_dim, dtype=jnp.float32):
  kq, kk, kv = jax.random.split(jax.random.key(seed), 3)
  q = jax.random.normal(kq, (b, q_len, heads, head_dim), jnp.float32).astype(dtype)
  k = jax.random.normal(kk, (b, kv_len, kv_heads, head_dim), jnp.float32).astype(dtype)
  v = jax.random.normal(kv, (b, kv_len, kv_heads, head_dim), jnp.float32).astype(dtype)
  return q, k, v


def packed_segments(lengths_per_row, total):
  """[batch, total] ids 1, 2, ... for the given sample lengths per row, 0 (padding) after."""
  rows = []
  for lengths in lengths_per_row:
    ids = np.concatenate([np.full(n, i + 1) for i, n in enumerate(lengths)] + [np.zeros(total - sum(lengths))])
    rows.append(ids)
  return jnp.asarray(np.stack(rows), jnp.int32)


def out_and_grads(fn, q, k, v, q_seg, kv_seg, causal):
  """Output and d(sum(out * w))/d(q, k, v) for a fixed random cotangent w, in one jit."""
  w = jax.random.normal(jax.random.key(99), q.shape, jnp.float32)

  def loss(q, k, v):
    out = fn(q, k, v, q_seg, kv_seg, causal=causal)
    return jnp.sum(out.astype(jnp.float32) * w), out

  step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))
  (_, out), grads = step.lower(q, k, v).compile(compiler_options=FAST_COMPILE)(q, k, v)
  return out, grads


def assert_matches_reference(fn, q, k, v, q_seg, kv_seg, causal, atol, rtol=0.0):
  """Forward and all three gradients of `fn` against the XLA reference; returns fn's (out, grads)."""
  with jax.default_matmul_precision("highest"):
    got_out, got_grads = out_and_grads(fn, q, k, v, q_seg, kv_seg, causal)
    ref_out, ref_grads = out_and_grads(xla_attention, q, k, v, q_seg, kv_seg, causal)
  for name, got, ref in zip(("out", "dq", "dk", "dv"), (got_out, *got_grads), (ref_out, *ref_grads)):
    got, ref = np.asarray(got, np.float32), np.asarray(ref, np.float32)
    assert np.isfinite(got).all(), f"{name} has non-finite values"
    # Tolerances scale with the array's magnitude, so gradients summed over many rows compare fairly.
    np.testing.assert_allclose(got, ref, atol=atol * max(1.0, np.abs(ref).max()), rtol=rtol,
                               err_msg=name)
  return got_out, got_grads
