"""Llama building blocks: RMSNorm, rotary embedding, SwiGLU MLP, token embedding.

Every parameter records its logical axis names (`logical_axes` metadata) and every activation is
pinned with `constrain`, so one rule table in config decides how all of it is sharded.
Parameters live in `param_dtype` (float32); matmuls run in `dtype` (bfloat16 by config).
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from mio_jax.parallel.rules import constrain

Initializer = Callable[[jax.Array, Sequence[int], jnp.dtype], jax.Array]


def param(rngs: nnx.Rngs, init: Initializer, shape: Sequence[int], logical_axes: Sequence[str],
          dtype: jnp.dtype) -> nnx.Param:
  return nnx.Param(init(rngs.params(), tuple(shape), dtype), logical_axes=tuple(logical_axes))


def fan_in_init(fan_in: int, std: float | None = None) -> Initializer:
  """Truncated normal with std 1/sqrt(fan_in) (or a fixed std), for any kernel layout."""
  scale = std if std is not None else fan_in**-0.5
  return lambda key, shape, dtype: scale * jax.random.truncated_normal(key, -2.0, 2.0, shape, dtype)


class RMSNorm(nnx.Module):
  def __init__(self, dim: int, *, eps: float, param_dtype, rngs: nnx.Rngs):
    self.eps = eps
    self.scale = param(rngs, lambda k, s, d: jnp.ones(s, d), (dim,), ("norm",), param_dtype)

  def __call__(self, x: jax.Array) -> jax.Array:
    # Normalise in float32 as Llama does, then return to the compute dtype.
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return (y * self.scale[...].astype(jnp.float32)).astype(x.dtype)


def rotary_embedding(x: jax.Array, positions: jax.Array, theta: float) -> jax.Array:
  """Rotate [batch, length, heads, head_dim] by positions [batch, length].

  Hugging Face Llama's convention: the two halves of head_dim form the (real, imaginary) pairs
  (`rotate_half`), so exported q/k weights need no permutation.
  """
  half = x.shape[-1] // 2
  inv_freq = 1.0 / (theta ** (jnp.arange(half, dtype=jnp.float32) / half))
  angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [b, t, half]
  cos = jnp.cos(angles)[:, :, None, :]
  sin = jnp.sin(angles)[:, :, None, :]
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


class MLP(nnx.Module):
  """SwiGLU: down(silu(x @ gate) * (x @ up))."""

  def __init__(self, embed: int, hidden: int, *, dtype, param_dtype, stacked_gate_up: bool = False,
               rngs: nnx.Rngs):
    self.dtype = dtype
    self.stacked_gate_up = stacked_gate_up
    self.gate = param(rngs, fan_in_init(embed), (embed, hidden), ("embed", "mlp"), param_dtype)
    self.up = param(rngs, fan_in_init(embed), (embed, hidden), ("embed", "mlp"), param_dtype)
    self.down = param(rngs, fan_in_init(hidden), (hidden, embed), ("mlp", "embed"), param_dtype)

  def __call__(self, x: jax.Array) -> jax.Array:
    d = self.dtype
    if self.stacked_gate_up:
      # Gate and up as one matmul over the stacked kernels [embed, 2, mlp]: one wide GEMM (and one
      # weight-gradient GEMM) instead of two, ~15-20% faster fwd+bwd on XLA CPU. Stacking on a new
      # axis leaves the mlp axis sharded as it was: no extra communication under tensor parallelism.
      kernel = jnp.stack([self.gate[...].astype(d), self.up[...].astype(d)], axis=1)
      gate_up = constrain(jnp.einsum("bte,ekm->btkm", x, kernel), ("batch", "length", None, "act_mlp"))
      gate, up = gate_up[:, :, 0], gate_up[:, :, 1]
    else:
      gate = constrain(jnp.einsum("bte,em->btm", x, self.gate[...].astype(d)), ("batch", "length", "act_mlp"))
      up = constrain(jnp.einsum("bte,em->btm", x, self.up[...].astype(d)), ("batch", "length", "act_mlp"))
    hidden = jax.nn.silu(gate) * up
    out = jnp.einsum("btm,me->bte", hidden, self.down[...].astype(d))
    return constrain(out, ("batch", "residual_length", "act_embed"))


class Embedding(nnx.Module):
  def __init__(self, vocab: int, embed: int, *, dtype, param_dtype, rngs: nnx.Rngs):
    self.dtype = dtype
    self.table = param(rngs, fan_in_init(embed, std=1.0), (vocab, embed), ("vocab", "embed"), param_dtype)

  def __call__(self, ids: jax.Array) -> jax.Array:
    # Gather the (compute-dtype) table whole before the lookup: a gather from a table split over
    # fsdp would come out split on embed and need a full reshuffle to the batch-split layout.
    table = constrain(self.table[...].astype(self.dtype), (None, None))
    x = jnp.take(table, ids, axis=0)
    return constrain(x, ("batch", "residual_length", "act_embed"))
