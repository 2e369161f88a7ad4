"""SigLIP's vision tower in flax.nnx, NHWC, as transformers' SiglipVisionModel computes it.

patch conv (stride = kernel = patch, VALID, bias) -> + learned position embedding (one per patch,
no class token) -> pre-LN encoder layers (LayerNorm, attention with q/k/v/out biases, residual;
LayerNorm, fc1 -> GELU (tanh) -> fc2, residual) -> post_layernorm: the per-patch sequence.
Optional MAP head (SiglipMultiheadAttentionPoolingHead = big_vision's MAPHead): a learned probe
attends over the sequence (torch nn.MultiheadAttention), then probe + MLP(LayerNorm(probe)).
Attribute names follow HF's module names, so parameter paths read as its state_dict keys.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from tokenizers_port.siglip.config import SiglipConfig


def layer_norm(dim: int, eps: float, rngs: nnx.Rngs) -> nnx.LayerNorm:
  # float32 whatever the compute dtype; two-pass variance as torch computes it (flax's default
  # E[x^2] - E[x]^2 loses digits on the residual stream's large means).
  return nnx.LayerNorm(dim, epsilon=eps, dtype=jnp.float32, use_fast_variance=False, rngs=rngs)


def linear(cin: int, cout: int, rngs: nnx.Rngs, dtype) -> nnx.Linear:
  return nnx.Linear(cin, cout, dtype=dtype, rngs=rngs)


def split_heads(x: jax.Array, heads: int) -> jax.Array:
  """[B, N, H*D] -> [B, H, N, D]."""
  b, n, _ = x.shape
  return x.reshape(b, n, heads, -1).transpose(0, 2, 1, 3)


class Attention(nnx.Module):
  """Multi-head attention with biased q/k/v/out projections (SiglipAttention; also the MAP head's
  nn.MultiheadAttention, whose packed in_proj the converter splits into q/k/v)."""

  def __init__(self, dim: int, heads: int, rngs: nnx.Rngs, dtype):
    self.heads = heads
    self.q_proj = linear(dim, dim, rngs, dtype)
    self.k_proj = linear(dim, dim, rngs, dtype)
    self.v_proj = linear(dim, dim, rngs, dtype)
    self.out_proj = linear(dim, dim, rngs, dtype)

  def __call__(self, x, context=None):
    """Queries from x [B, Nq, D], keys and values from context [B, Nk, D] (default x)."""
    context = x if context is None else context
    q = split_heads(self.q_proj(x), self.heads)
    k = split_heads(self.k_proj(context), self.heads)
    v = split_heads(self.v_proj(context), self.heads)
    scores = jnp.einsum("bhqd,bhkd->bhqk", q * q.shape[-1] ** -0.5, k).astype(jnp.float32)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)  # softmax in float32, as HF's eager
    out = jnp.einsum("bhqk,bhkd->bqhd", probs, v)
    return self.out_proj(out.reshape(out.shape[0], out.shape[1], -1))


class Mlp(nnx.Module):
  def __init__(self, cfg: SiglipConfig, rngs: nnx.Rngs, dtype):
    self.tanh_gelu = cfg.tanh_gelu
    self.fc1 = linear(cfg.hidden_size, cfg.intermediate_size, rngs, dtype)
    self.fc2 = linear(cfg.intermediate_size, cfg.hidden_size, rngs, dtype)

  def __call__(self, x):
    return self.fc2(jax.nn.gelu(self.fc1(x), approximate=self.tanh_gelu))


class EncoderLayer(nnx.Module):
  def __init__(self, cfg: SiglipConfig, rngs: nnx.Rngs, dtype):
    d, eps = cfg.hidden_size, cfg.layer_norm_eps
    self.layer_norm1 = layer_norm(d, eps, rngs)
    self.self_attn = Attention(d, cfg.num_attention_heads, rngs, dtype)
    self.layer_norm2 = layer_norm(d, eps, rngs)
    self.mlp = Mlp(cfg, rngs, dtype)

  def __call__(self, x):
    x = x + self.self_attn(self.layer_norm1(x).astype(x.dtype))
    return x + self.mlp(self.layer_norm2(x).astype(x.dtype))


class Encoder(nnx.Module):
  def __init__(self, cfg: SiglipConfig, rngs: nnx.Rngs, dtype):
    self.layers = nnx.List([EncoderLayer(cfg, rngs, dtype) for _ in range(cfg.num_hidden_layers)])

  def __call__(self, x):
    for layer in self.layers:
      x = layer(x)
    return x


class Embeddings(nnx.Module):
  def __init__(self, cfg: SiglipConfig, rngs: nnx.Rngs, dtype):
    p = cfg.patch_size
    self.patch_embedding = nnx.Conv(3, cfg.hidden_size, (p, p), strides=(p, p), padding="VALID",
                                    dtype=dtype, rngs=rngs)
    self.position_embedding = nnx.Param(jnp.zeros((cfg.num_patches, cfg.hidden_size), jnp.float32))

  def __call__(self, x):
    """[B, S, S, 3] -> [B, (S//p)^2, D], patches in raster order (torch's flatten(2))."""
    y = self.patch_embedding(x)
    y = y.reshape(y.shape[0], -1, y.shape[-1])
    return y + self.position_embedding[...].astype(y.dtype)


class MapHead(nnx.Module):
  """SiglipMultiheadAttentionPoolingHead: [B, L, D] -> [B, D]."""

  def __init__(self, cfg: SiglipConfig, rngs: nnx.Rngs, dtype):
    d = cfg.hidden_size
    self.probe = nnx.Param(jnp.zeros((1, 1, d), jnp.float32))
    self.attention = Attention(d, cfg.num_attention_heads, rngs, dtype)
    self.layernorm = layer_norm(d, cfg.layer_norm_eps, rngs)
    self.mlp = Mlp(cfg, rngs, dtype)

  def __call__(self, x):
    probe = jnp.broadcast_to(self.probe[...].astype(x.dtype), (x.shape[0], 1, x.shape[-1]))
    h = self.attention(probe, x)
    h = h + self.mlp(self.layernorm(h).astype(h.dtype))
    return h[:, 0]


class SiglipVisionModel(nnx.Module):
  def __init__(self, cfg: SiglipConfig, rngs: nnx.Rngs, dtype=jnp.float32):
    self.cfg, self.dtype = cfg, dtype
    self.embeddings = Embeddings(cfg, rngs, dtype)
    self.encoder = Encoder(cfg, rngs, dtype)
    self.post_layernorm = layer_norm(cfg.hidden_size, cfg.layer_norm_eps, rngs)
    self.head = MapHead(cfg, rngs, dtype) if cfg.vision_use_head else None

  def encode_patches(self, x):
    """Normalised images [B, S, S, 3] -> post-layernorm patch sequence float32 [B, L, D]
    (HF's last_hidden_state; big_vision's `encoded`)."""
    h = self.encoder(self.embeddings(x.astype(self.dtype)))
    return self.post_layernorm(h).astype(jnp.float32)

  def pool(self, x):
    """Normalised images -> MAP-head output float32 [B, D] (HF's pooler_output)."""
    if self.head is None:
      raise ValueError("this SigLIP config has no MAP head (vision_use_head=False)")
    return self.head(self.encode_patches(x).astype(self.dtype)).astype(jnp.float32)
