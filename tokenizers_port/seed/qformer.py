"""The causal Q-Former of SEED-Tokenizer-2 (seed_qformer/qformer_causual.py), query path only.

SEED runs `Qformer.bert(query_embeds=query_tokens, encoder_hidden_states=image_embeds)` with no
text, so every layer sees the queries alone: LayerNorm(query_tokens) (BertEmbeddings; word and
position embeddings are removed), then per BERT layer (post-norm, eps 1e-12):
  self-attention among queries -> dense -> LayerNorm(. + x)
  [every `cross_attention_freq`-th layer] cross-attention to the image tokens -> dense -> LN(. + x)
  intermediate_query (GELU) -> output_query -> LayerNorm(. + x)
With exactly 32 queries BertModel makes the query self-attention causal (query i sees queries
0..i) through an additive mask of -10000 on the blocked scores, reproduced here as it is.
"""

import jax.numpy as jnp
from flax import nnx

from tokenizers_port.seed.config import SeedConfig
from tokenizers_port.seed.layers import attend, gelu, layer_norm, linear, merge_heads, split_heads

MASKED = -10000.0  # get_extended_attention_mask: (1 - mask) * -10000.0


def causal_mask(n: int) -> jnp.ndarray:
  allowed = jnp.arange(n)[None, :] <= jnp.arange(n)[:, None]
  return jnp.where(allowed, 0.0, MASKED).astype(jnp.float32)


class BertAttentionBlock(nnx.Module):
  """BertAttention: query/key/value projections, attention, dense, LayerNorm(. + input)."""

  def __init__(self, cfg: SeedConfig, kv_dim: int, rngs: nnx.Rngs, dtype):
    h = cfg.qformer_hidden
    self.heads = cfg.qformer_heads
    self.query = linear(h, h, rngs, dtype)
    self.key = linear(kv_dim, h, rngs, dtype)
    self.value = linear(kv_dim, h, rngs, dtype)
    self.dense = linear(h, h, rngs, dtype)
    self.norm = layer_norm(h, cfg.qformer_eps, rngs)

  def __call__(self, x, context, mask=None):
    q, k, v = (split_heads(t, self.heads) for t in (self.query(x), self.key(context),
                                                    self.value(context)))
    # BERT divides the scores by sqrt(head size) (after q k^T; the same up to rounding).
    out = attend(q / jnp.sqrt(jnp.float32(q.shape[-1])).astype(q.dtype), k, v, mask)
    return self.norm(self.dense(merge_heads(out)) + x).astype(x.dtype)


class QueryFeedForward(nnx.Module):
  """intermediate_query.dense -> GELU -> output_query.dense -> LayerNorm(. + input)."""

  def __init__(self, cfg: SeedConfig, rngs: nnx.Rngs, dtype):
    self.fc1 = linear(cfg.qformer_hidden, cfg.qformer_intermediate, rngs, dtype)
    self.fc2 = linear(cfg.qformer_intermediate, cfg.qformer_hidden, rngs, dtype)
    self.norm = layer_norm(cfg.qformer_hidden, cfg.qformer_eps, rngs)

  def __call__(self, x):
    return self.norm(self.fc2(gelu(self.fc1(x))) + x).astype(x.dtype)


class QFormerLayer(nnx.Module):
  def __init__(self, cfg: SeedConfig, cross: bool, rngs: nnx.Rngs, dtype):
    self.self_attn = BertAttentionBlock(cfg, cfg.qformer_hidden, rngs, dtype)
    self.cross_attn = BertAttentionBlock(cfg, cfg.vit_width, rngs, dtype) if cross else None
    self.ffn = QueryFeedForward(cfg, rngs, dtype)

  def __call__(self, x, image, mask):
    x = self.self_attn(x, x, mask)
    if self.cross_attn is not None:
      x = self.cross_attn(x, image)  # all image tokens are valid: no mask
    return self.ffn(x)


class QFormer(nnx.Module):
  def __init__(self, cfg: SeedConfig, rngs: nnx.Rngs, dtype=jnp.float32):
    self.cfg, self.dtype = cfg, dtype
    self.query_tokens = nnx.Param(jnp.zeros((1, cfg.num_query_tokens, cfg.qformer_hidden),
                                            jnp.float32))
    self.embed_norm = layer_norm(cfg.qformer_hidden, cfg.qformer_eps, rngs)
    self.layers = nnx.List([QFormerLayer(cfg, i in cfg.cross_attention_layers, rngs, dtype)
                            for i in range(cfg.qformer_layers)])

  def __call__(self, image_embeds):
    """ln_vision(ViT tokens) [B, N, vit_width] -> query outputs [B, num_query_tokens, hidden]."""
    b = image_embeds.shape[0]
    n = self.cfg.num_query_tokens
    x = jnp.broadcast_to(self.query_tokens[...], (b, n, self.cfg.qformer_hidden))
    x = self.embed_norm(x).astype(self.dtype)
    mask = causal_mask(n) if self.cfg.causal_queries else None
    image = image_embeds.astype(self.dtype)
    for layer in self.layers:
      x = layer(x, image, mask)
    return x
