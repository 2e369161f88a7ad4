"""Layers shared by the ViT, the Q-Former and the code -> embedding blocks."""

import jax
import jax.numpy as jnp
from flax import nnx

# Exact (erf) GELU: torch nn.GELU() and transformers' ACT2FN["gelu"].
gelu = lambda x: jax.nn.gelu(x, approximate=False)  # noqa: E731


def linear(cin: int, cout: int, rngs: nnx.Rngs, dtype, bias: bool = True) -> nnx.Linear:
  return nnx.Linear(cin, cout, use_bias=bias, dtype=dtype, rngs=rngs)


def layer_norm(dim: int, eps: float, rngs: nnx.Rngs) -> nnx.LayerNorm:
  # Kept in float32 whatever the compute dtype (blip2.LayerNorm computes in float32 too).
  return nnx.LayerNorm(dim, epsilon=eps, dtype=jnp.float32, rngs=rngs)


def split_heads(x: jax.Array, heads: int) -> jax.Array:
  """[B, N, H*D] -> [B, H, N, D]."""
  b, n, _ = x.shape
  return x.reshape(b, n, heads, -1).transpose(0, 2, 1, 3)


def merge_heads(x: jax.Array) -> jax.Array:
  """[B, H, N, D] -> [B, N, H*D]."""
  b, h, n, d = x.shape
  return x.transpose(0, 2, 1, 3).reshape(b, n, h * d)


def attend(q, k, v, mask=None):
  """softmax(q k^T + mask) v over [B, H, N, D] heads; q already scaled. Softmax in float32."""
  scores = jnp.einsum("bhqd,bhkd->bhqk", q, k).astype(jnp.float32)
  if mask is not None:
    scores = scores + mask
  probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
  return jnp.einsum("bhqk,bhkd->bhqd", probs, v)


class Mlp(nnx.Module):
  """fc1 -> GELU -> fc2 (timm / EVA Mlp)."""

  def __init__(self, dim: int, hidden: int, rngs: nnx.Rngs, dtype):
    self.fc1 = linear(dim, hidden, rngs, dtype)
    self.fc2 = linear(hidden, dim, rngs, dtype)

  def __call__(self, x):
    return self.fc2(gelu(self.fc1(x)))
