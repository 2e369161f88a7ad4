"""The image policy inside the jitted encode: uint8 [B, H, W, 3] -> CLIP-normalised float32
[B, S, S, 3]. As clip_transform.yaml (keep_ratio False): squash-resize to S x S (no crop),
ToTensor (/255), Normalize(CLIP mean, std)."""

import jax
import jax.numpy as jnp

from tokenizers_port.seed.config import SeedConfig


def resize_uint8(images, cfg: SeedConfig):
  """uint8-valued float32 [B, S, S, C], resized as PIL does a uint8 image: width first, then
  height, each pass rounded to uint8 (PIL keeps an 8-bit image between its two passes)."""
  b, h, w, c = images.shape
  x = images.astype(jnp.float32)
  s = cfg.image_size
  for shape in ((b, h, s, c), (b, s, s, c)):
    if shape != x.shape:
      x = jax.image.resize(x, shape, cfg.resize_method, antialias=cfg.antialias)
      x = jnp.clip(jnp.round(x), 0, 255)
  return x


def preprocess(images, cfg: SeedConfig):
  x = resize_uint8(images, cfg) / 255.0
  mean = jnp.asarray(cfg.mean, jnp.float32)
  std = jnp.asarray(cfg.std, jnp.float32)
  return (x - mean) / std
