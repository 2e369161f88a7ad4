"""The VQGAN tokenizer config: architecture (read off the checkpoint) plus the image policy.

One config covers both released families. taming-transformers f16 and LlamaGen VQ-16 share the
encoder/decoder layout; they differ in where attention sits (`*_attn_levels`), the code dimension
and whether z and the codebook are L2-normalised before the nearest-code search (`l2_norm`).
"""

import dataclasses
from typing import ClassVar

from tokenizers_port import config_files
from tokenizers_port.config_files import CONFIG_FILE, save_config  # noqa: F401 (this module's API)

FLAVORS = ("taming", "llamagen")
RESIZE_POLICIES = ("shorter_side", "none")
CROP_POLICIES = ("center", "none")
RESIZE_METHODS = ("linear", "cubic", "lanczos3", "nearest")


@dataclasses.dataclass(frozen=True)
class VQGANConfig(config_files.JsonConfig):
  LABEL: ClassVar[str] = "VQGAN"
  flavor: str
  # Architecture.
  in_channels: int = 3
  out_channels: int = 3
  ch: int = 128
  encoder_ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
  decoder_ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
  num_res_blocks: int = 2
  # Levels (0 = full resolution) whose res blocks are each followed by self-attention.
  encoder_attn_levels: tuple[int, ...] = (4,)
  decoder_attn_levels: tuple[int, ...] = (4,)
  z_channels: int = 256
  embed_dim: int = 256
  n_embed: int = 16384
  l2_norm: bool = False
  num_groups: int = 32
  norm_eps: float = 1e-6
  # Image policy applied by `encode` to uint8 input: resize, crop, then scale to [-1, 1].
  image_size: int = 256
  resize: str = "shorter_side"
  resize_method: str = "cubic"
  antialias: bool = True
  crop: str = "center"

  def __post_init__(self):
    checks = [
        (self.flavor in FLAVORS, "flavor", f"one of {FLAVORS}"),
        (self.resize in RESIZE_POLICIES, "resize", f"one of {RESIZE_POLICIES}"),
        (self.crop in CROP_POLICIES, "crop", f"one of {CROP_POLICIES}"),
        (self.resize_method in RESIZE_METHODS, "resize_method", f"one of {RESIZE_METHODS}"),
        (len(self.encoder_ch_mult) == len(self.decoder_ch_mult), "decoder_ch_mult",
         "as many levels as encoder_ch_mult"),
        (self.image_size % self.downsample_factor == 0, "image_size",
         f"a multiple of the downsampling factor {self.downsample_factor}"),
    ]
    for ok, key, want in checks:
      if not ok:
        raise ValueError(f"VQGAN config: {key}={getattr(self, key)!r} must be {want}")

  @property
  def num_levels(self) -> int:
    return len(self.encoder_ch_mult)

  @property
  def downsample_factor(self) -> int:
    return 2 ** (len(self.encoder_ch_mult) - 1)

  @property
  def grid_size(self) -> int:
    """Codes per side for an `image_size` input: 16 for f16 at 256 px."""
    return self.image_size // self.downsample_factor


def tiny_config(ch: int = 8) -> VQGANConfig:
  """The tiny VQGAN: f16 (16x16 codes at 256 px), 8192 codes of dim 8; ch=8 trained
  (data/tokenizers/tiny_vqgan), ch=4 random (mio_jax.tokenize.tiny_tokenizers)."""
  return VQGANConfig(
      flavor="taming", ch=ch, encoder_ch_mult=(1, 1, 2, 2, 4), decoder_ch_mult=(1, 1, 2, 2, 4),
      num_res_blocks=1, encoder_attn_levels=(), decoder_attn_levels=(), z_channels=8,
      embed_dim=8, n_embed=8192, num_groups=2)


def load_config(directory: str) -> VQGANConfig:
  return config_files.load_config(VQGANConfig, directory, command="vqgan")
