"""Codes -> the unCLIP image embedding the diffusion decoder is conditioned on
(Blip2QformerQuantizer.get_codebook_entry, as seed_llama_tokenizer.ImageTokenizer.decode uses it):

  codebook rows [B, 32, 32] -> decode_task_layer (Linear, tanh, Linear -> hidden)
  + pos_embed_image -> 4 ViT blocks (timm-style: qkv with a full bias, 12 heads, MLP 4x, eps 1e-6;
  no final norm) -> image_down (768 -> 256 -> 128 -> 32, ReLU between, no biases)
  -> flatten [B, 32 * 32] -> distill_image_proj -> [B, 1024]
"""

import jax
import jax.numpy as jnp
from flax import nnx

from tokenizers_port.seed.config import SeedConfig
from tokenizers_port.seed.layers import Mlp, attend, layer_norm, linear, merge_heads, split_heads


class TanhMlp(nnx.Module):
  """nn.Sequential(Linear, Tanh, Linear): encode_task_layer and decode_task_layer."""

  def __init__(self, cin: int, hidden: int, cout: int, rngs: nnx.Rngs, dtype):
    self.fc1 = linear(cin, hidden, rngs, dtype)
    self.fc2 = linear(hidden, cout, rngs, dtype)

  def __call__(self, x):
    return self.fc2(jnp.tanh(self.fc1(x)))


class VitBlock(nnx.Module):
  """LAVIS vit.Block: pre-norm attention (one qkv Linear with bias) and GELU MLP."""

  def __init__(self, dim: int, heads: int, mlp_dim: int, eps: float, rngs: nnx.Rngs, dtype):
    self.heads = heads
    self.norm1 = layer_norm(dim, eps, rngs)
    self.qkv = linear(dim, 3 * dim, rngs, dtype)
    self.proj = linear(dim, dim, rngs, dtype)
    self.norm2 = layer_norm(dim, eps, rngs)
    self.mlp = Mlp(dim, mlp_dim, rngs, dtype)

  def __call__(self, x):
    qkv = jnp.split(self.qkv(self.norm1(x).astype(x.dtype)), 3, axis=-1)
    q, k, v = (split_heads(t, self.heads) for t in qkv)
    # vit.Attention scales after q k^T; the same up to rounding.
    x = x + self.proj(merge_heads(attend(q * q.shape[-1] ** -0.5, k, v)))
    return x + self.mlp(self.norm2(x).astype(x.dtype))


class ImageEmbedding(nnx.Module):
  def __init__(self, cfg: SeedConfig, rngs: nnx.Rngs, dtype=jnp.float32):
    h = cfg.qformer_hidden
    self.decode_task_layer = TanhMlp(cfg.code_dim, cfg.code_dim, h, rngs, dtype)
    self.pos_embed_image = nnx.Param(jnp.zeros((1, cfg.num_query_tokens, h), jnp.float32))
    self.blocks_image = nnx.List([
        VitBlock(h, cfg.image_block_heads, cfg.image_block_mlp_dim, cfg.image_block_eps, rngs,
                 dtype) for _ in range(cfg.image_blocks)])
    dims = (h,) + tuple(cfg.image_down_dims)
    self.image_down = nnx.List([linear(a, b, rngs, dtype, bias=False)
                                for a, b in zip(dims[:-1], dims[1:])])
    self.distill_image_proj = linear(cfg.num_query_tokens * dims[-1], cfg.unclip_dim, rngs, dtype)

  def __call__(self, code_vectors):
    """Codebook rows [B, num_query_tokens, code_dim] -> image embeddings [B, unclip_dim]."""
    x = self.decode_task_layer(code_vectors)
    x = x + self.pos_embed_image[...].astype(x.dtype)
    for blk in self.blocks_image:
      x = blk(x)
    for i, fc in enumerate(self.image_down):
      x = fc(x) if i == 0 else fc(jax.nn.relu(x))
    return self.distill_image_proj(x.reshape(x.shape[0], -1))
