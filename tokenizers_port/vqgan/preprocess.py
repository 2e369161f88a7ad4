"""The image policy of the config, applied inside the jitted encode: uint8 in, [-1, 1] out."""

import jax
import jax.numpy as jnp

from tokenizers_port.vqgan.config import VQGANConfig


def target_hw(cfg: VQGANConfig, h: int, w: int) -> tuple[tuple[int, int], tuple[int, int]]:
  """(resized size, final size) for an input of h x w under the config's policy."""
  size = cfg.image_size
  if cfg.resize == "shorter_side" and min(h, w) != size:
    scale = size / min(h, w)
    h, w = max(size, round(h * scale)), max(size, round(w * scale))
  resized = (h, w)
  if cfg.crop == "center":
    if h < size or w < size:
      raise ValueError(f"image {h}x{w} is smaller than image_size={size} and resize='none'")
    return resized, (size, size)
  f = cfg.downsample_factor
  if h % f or w % f:
    raise ValueError(f"image {h}x{w}: with crop='none' both sides must be multiples of {f}")
  return resized, (h, w)


def preprocess(images, cfg: VQGANConfig):
  """uint8 [B, H, W, C] -> float32 [B, S, S, C] in [-1, 1]: resize, centre crop, rescale."""
  b, h, w, c = images.shape
  (rh, rw), (th, tw) = target_hw(cfg, h, w)
  x = images.astype(jnp.float32)
  if (rh, rw) != (h, w):
    x = jax.image.resize(x, (b, rh, rw, c), cfg.resize_method, antialias=cfg.antialias)
    x = jnp.clip(jnp.round(x), 0, 255)  # As a uint8 resize would leave it.
  # Same offsets as torchvision's CenterCrop.
  top, left = int(round((rh - th) / 2.0)), int(round((rw - tw) / 2.0))
  x = x[:, top:top + th, left:left + tw, :]
  return x / 127.5 - 1.0


def to_uint8(x):
  """Decoder output in [-1, 1] -> uint8, clipping as taming's custom_to_pil does."""
  return jnp.round((jnp.clip(x, -1.0, 1.0) + 1.0) * 127.5).astype(jnp.uint8)
