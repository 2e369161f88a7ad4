"""SEED-Tokenizer-2: images -> 32 codes (get_codebook_indices) and codes -> unCLIP image
embedding (get_codebook_entry), in flax.nnx, NHWC.

Encode: ViT -> ln_vision -> causal Q-Former -> encode_task_layer (hidden -> hidden, tanh,
-> 32) -> nearest codebook row by d = |z|^2 + |e|^2 - 2 z.e (VectorQuantizer2; no L2
normalisation of z or the codebook). torch_keys.py maps these attribute paths to the released
state_dict keys.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from tokenizers_port.seed.config import SeedConfig
from tokenizers_port.seed.embed import ImageEmbedding, TanhMlp
from tokenizers_port.seed.layers import layer_norm
from tokenizers_port.seed.qformer import QFormer
from tokenizers_port.seed.vit import VisionTransformer


def nearest_code(z: jax.Array, codebook: jax.Array) -> jax.Array:
  """argmin_j |z - e_j|^2 in VectorQuantizer2's expanded form, float32: [..., D] -> int32 [...]."""
  z = z.astype(jnp.float32)
  e = codebook.astype(jnp.float32)
  d = (jnp.sum(z * z, axis=-1, keepdims=True) + jnp.sum(e * e, axis=-1)
       - 2.0 * jnp.einsum("...d,nd->...n", z, e, precision=jax.lax.Precision.HIGHEST))
  return jnp.argmin(d, axis=-1).astype(jnp.int32)


class SeedTokenizerModel(nnx.Module):
  def __init__(self, cfg: SeedConfig, rngs: nnx.Rngs, dtype=jnp.float32):
    self.cfg = cfg
    self.visual_encoder = VisionTransformer(cfg, rngs, dtype)
    self.ln_vision = layer_norm(cfg.vit_width, cfg.ln_vision_eps, rngs)
    self.qformer = QFormer(cfg, rngs, dtype)
    self.encode_task_layer = TanhMlp(cfg.qformer_hidden, cfg.qformer_hidden, cfg.code_dim, rngs,
                                     dtype)
    self.codebook = nnx.Param(jnp.zeros((cfg.n_embed, cfg.code_dim), jnp.float32))
    self.image_embedding = ImageEmbedding(cfg, rngs, dtype)

  def image_features(self, x):
    """Normalised images [B, S, S, 3] -> ln_vision(ViT tokens) [B, 1 + (S/p)^2, vit_width]."""
    return self.ln_vision(self.visual_encoder(x))

  def query_features(self, x):
    """The Q-Former's last hidden state [B, 32, hidden] (pre-quantizer)."""
    return self.qformer(self.image_features(x))

  def latents(self, x):
    """encode_task_layer output [B, 32, code_dim]: the vectors the codebook search sees."""
    return self.encode_task_layer(self.query_features(x)).astype(jnp.float32)

  def encode(self, x):
    """Normalised images -> int32 codes [B, 32]."""
    return nearest_code(self.latents(x), self.codebook[...])

  def encode_features(self, x):
    """(Q-Former output, quantizer input, codes) of normalised images, in one pass."""
    query = self.query_features(x)
    z = self.encode_task_layer(query).astype(jnp.float32)
    return query.astype(jnp.float32), z, nearest_code(z, self.codebook[...])

  def embed_codes(self, codes):
    """int codes [B, 32] -> unCLIP image embeddings [B, unclip_dim] (float32)."""
    vectors = jnp.take(self.codebook[...], codes, axis=0)
    return self.image_embedding(vectors).astype(jnp.float32)
