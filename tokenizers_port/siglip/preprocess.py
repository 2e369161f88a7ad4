"""SiglipImageProcessor's default policy on uint8 RGB images, reproduced exactly.

transformers 5.24 (image_processing_backends.PilBackend, the class SiglipImageProcessor falls back
to without torchvision, and the one whose arithmetic is specified in numpy): PIL resize of the uint8
image to (image_size, image_size) with the configured filter (bicubic; no crop, aspect ratio not
kept; PIL returns a copy when the size already matches), then `rescale`: float32(float64(x) *
rescale_factor), then `normalize`: (x - mean) / std in float32. Only 256 values per channel can
come out, so the two arithmetic steps are a [3, 256] lookup table, computed here with exactly
those operations and applied inside the jitted encoder (uint8 travels to the device, bit-exact).
"""

import jax.numpy as jnp
import numpy as np
from PIL import Image

from tokenizers_port.siglip.config import RESAMPLE_CODES, SiglipConfig


def _check_uint8_rgb(image: np.ndarray, what: str) -> None:
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f"{what}: expected uint8 [H, W, 3] images, got {image.dtype} {list(image.shape)}")


def resize_images(images, cfg: SiglipConfig) -> np.ndarray:
  """uint8 [B, H, W, 3] (or a list of [H, W, 3] of any sizes) -> uint8 [B, S, S, 3], S = image_size,
  by PIL with cfg.resample; images already S x S are passed through unchanged."""
  s = cfg.image_size
  if isinstance(images, np.ndarray):
    if images.ndim != 4:
      raise ValueError(f"resize_images: expected uint8 [B, H, W, 3], got {images.dtype} "
                       f"{list(images.shape)}")
    if images.shape[1:] == (s, s, 3) and images.dtype == np.uint8:
      return images
  out = []
  for image in images:
    image = np.asarray(image)
    _check_uint8_rgb(image, "resize_images")
    if image.shape[:2] != (s, s):
      pil = Image.fromarray(image).resize((s, s), resample=Image.Resampling(RESAMPLE_CODES[cfg.resample]))
      image = np.asarray(pil)
    out.append(image)
  return np.stack(out) if out else np.zeros((0, s, s, 3), np.uint8)


def normalize_table(cfg: SiglipConfig) -> np.ndarray:
  """float32 [256, 3]: the pixel value of each uint8 level in each channel, by HF's arithmetic."""
  levels = np.arange(256, dtype=np.uint8)[:, None].repeat(3, axis=1)
  x = (levels.astype(np.float64) * cfg.rescale_factor).astype(np.float32)  # image_transforms.rescale
  mean = np.asarray(cfg.mean, np.float32)
  std = np.asarray(cfg.std, np.float32)
  return (x - mean) / std  # image_transforms.normalize, float32


def normalize(images, table):
  """uint8 [B, S, S, 3] -> float32 pixel values [B, S, S, 3] through `normalize_table` (jittable)."""
  return jnp.asarray(table)[images.astype(jnp.int32), jnp.arange(3)]


def pixel_values(images, cfg: SiglipConfig) -> np.ndarray:
  """The whole policy in numpy: uint8 images -> float32 [B, S, S, 3] (HF's pixel_values, NHWC)."""
  x = resize_images(images, cfg)
  return normalize_table(cfg)[x.astype(np.int64), np.arange(3)]
