"""EVA-CLIP ViT-g/14 as BLIP-2 builds it (eva_vit.VisionTransformer via create_eva_vit_g).

Pre-norm blocks without layer scale (init_values=None) or relative position bias; the qkv
projection has no bias of its own: the bias is [q_bias, 0, v_bias] (keys get none). The
output is the last block's, with no final norm: the model is built 39 blocks deep, so the
Q-Former reads EVA-CLIP's second-to-last layer; blip2's `ln_vision` follows (in model.py).
"""

import jax.numpy as jnp
from flax import nnx

from tokenizers_port.seed.config import SeedConfig
from tokenizers_port.seed.layers import Mlp, attend, layer_norm, linear, merge_heads, split_heads


class EvaAttention(nnx.Module):
  def __init__(self, dim: int, heads: int, rngs: nnx.Rngs, dtype):
    self.heads, self.head_dim = heads, dim // heads
    inner = self.heads * self.head_dim
    self.qkv = linear(dim, 3 * inner, rngs, dtype, bias=False)
    self.q_bias = nnx.Param(jnp.zeros((inner,), jnp.float32))
    self.v_bias = nnx.Param(jnp.zeros((inner,), jnp.float32))
    self.proj = linear(inner, dim, rngs, dtype)

  def __call__(self, x):
    q, k, v = jnp.split(self.qkv(x), 3, axis=-1)
    q = q + self.q_bias[...].astype(q.dtype)
    v = v + self.v_bias[...].astype(v.dtype)
    q, k, v = (split_heads(t, self.heads) for t in (q, k, v))
    out = attend(q * self.head_dim ** -0.5, k, v)
    return self.proj(merge_heads(out))


class EvaBlock(nnx.Module):
  def __init__(self, cfg: SeedConfig, rngs: nnx.Rngs, dtype):
    self.norm1 = layer_norm(cfg.vit_width, cfg.vit_eps, rngs)
    self.attn = EvaAttention(cfg.vit_width, cfg.vit_heads, rngs, dtype)
    self.norm2 = layer_norm(cfg.vit_width, cfg.vit_eps, rngs)
    self.mlp = Mlp(cfg.vit_width, cfg.vit_mlp_dim, rngs, dtype)

  def __call__(self, x):
    x = x + self.attn(self.norm1(x).astype(x.dtype))
    return x + self.mlp(self.norm2(x).astype(x.dtype))


class PatchEmbed(nnx.Module):
  def __init__(self, cfg: SeedConfig, rngs: nnx.Rngs, dtype):
    p = cfg.patch_size
    self.proj = nnx.Conv(3, cfg.vit_width, (p, p), strides=(p, p), padding="VALID", dtype=dtype,
                         rngs=rngs)

  def __call__(self, x):
    """[B, H, W, 3] -> [B, (H/p)*(W/p), width], patches in raster order (as torch's flatten(2))."""
    y = self.proj(x)
    return y.reshape(y.shape[0], -1, y.shape[-1])


class VisionTransformer(nnx.Module):
  def __init__(self, cfg: SeedConfig, rngs: nnx.Rngs, dtype=jnp.float32):
    self.dtype = dtype
    self.patch_embed = PatchEmbed(cfg, rngs, dtype)
    self.cls_token = nnx.Param(jnp.zeros((1, 1, cfg.vit_width), jnp.float32))
    self.pos_embed = nnx.Param(jnp.zeros((1, cfg.grid_size ** 2 + 1, cfg.vit_width), jnp.float32))
    self.blocks = nnx.List([EvaBlock(cfg, rngs, dtype) for _ in range(cfg.vit_depth)])

  def __call__(self, x):
    """Normalised images [B, S, S, 3] -> the last block's tokens [B, 1 + (S/p)^2, width]."""
    x = self.patch_embed(x.astype(self.dtype))
    cls = jnp.broadcast_to(self.cls_token[...], (x.shape[0], 1, x.shape[-1])).astype(x.dtype)
    x = jnp.concatenate([cls, x], axis=1) + self.pos_embed[...].astype(x.dtype)
    for blk in self.blocks:
      x = blk(x)
    return x
