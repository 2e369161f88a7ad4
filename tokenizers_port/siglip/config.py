"""The SigLIP vision tower config: architecture (HF SiglipVisionConfig's names) and image policy.

Presets (`PRESETS`), each checked against two sources:
- "So400m/14-384": google/siglip-so400m-patch14-384's config.json on the Hugging Face hub
  (vision_config: hidden_size 1152, intermediate_size 4304, num_hidden_layers 27,
  num_attention_heads 16, patch_size 14, image_size 384; layer_norm_eps and hidden_act are
  SiglipVisionConfig's defaults 1e-6 / gelu_pytorch_tanh) and big_vision's
  models/vit.py decode_variant("So400m/14") (width 1152, depth 27, mlp_dim 4304, heads 16).
  384 // 14 = 27, so 27 x 27 = 729 patches; the conv drops the last 6 pixel rows and columns.
- "B/16-224": google/siglip-base-patch16-224, whose config.json sets only patch_size 16 and keeps
  SiglipVisionConfig's defaults (documented as that checkpoint's: hidden_size 768,
  intermediate_size 3072, 12 layers, 12 heads, image_size 224); big_vision decode_variant("B/16")
  agrees (768, 12, 3072, 12). 14 x 14 = 196 patches.
- "tiny": a test size; 62 px with patch 14 leaves a remainder, as So400m at 384 does.
Image policy defaults: SiglipImageProcessor's (preprocessor_config.json of both checkpoints:
resample 3 = PIL bicubic, rescale_factor 1/255, image_mean = image_std = 0.5, size = image_size).
"""

import dataclasses
from typing import ClassVar

from tokenizers_port import config_files
from tokenizers_port.config_files import CONFIG_FILE, save_config  # noqa: F401 (this module's API)

# transformers' ACT2FN names of the tanh-approximated GELU, and the exact (erf) one.
TANH_GELUS = ("gelu_pytorch_tanh", "gelu_python_tanh", "gelu_new", "gelu_fast")
ACTIVATIONS = TANH_GELUS + ("gelu",)
# PIL's resampling filters by name, with the integer codes HF preprocessor configs store.
RESAMPLE_CODES = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "box": 4, "hamming": 5}


@dataclasses.dataclass(frozen=True)
class SiglipConfig(config_files.JsonConfig):
  LABEL: ClassVar[str] = "SigLIP"
  image_size: int = 384
  patch_size: int = 14
  hidden_size: int = 1152
  intermediate_size: int = 4304
  num_hidden_layers: int = 27
  num_attention_heads: int = 16
  layer_norm_eps: float = 1e-6
  hidden_act: str = "gelu_pytorch_tanh"
  # The multihead attention-pooling (MAP) head; encode_patches never uses it.
  vision_use_head: bool = True
  # Image policy of encode_patches (uint8 in): PIL resize to image_size x image_size (no crop),
  # then x * rescale_factor, then (x - mean) / std, in SiglipImageProcessor's arithmetic.
  resample: str = "bicubic"
  rescale_factor: float = 1 / 255
  mean: tuple[float, ...] = (0.5, 0.5, 0.5)
  std: tuple[float, ...] = (0.5, 0.5, 0.5)

  def __post_init__(self):
    checks = [
        (self.patch_size <= self.image_size, "patch_size", f"at most image_size={self.image_size}"),
        (self.hidden_size % self.num_attention_heads == 0, "num_attention_heads",
         f"a divisor of hidden_size={self.hidden_size}"),
        (self.hidden_act in ACTIVATIONS, "hidden_act", f"one of {ACTIVATIONS}"),
        (self.resample in RESAMPLE_CODES, "resample", f"one of {tuple(RESAMPLE_CODES)}"),
        (len(self.mean) == len(self.std) == 3, "mean", "3 values (and std too)"),
    ]
    for ok, key, want in checks:
      if not ok:
        raise ValueError(f"SigLIP config: {key}={getattr(self, key)!r} must be {want}")

  @property
  def grid_size(self) -> int:
    """Patches per side: the VALID conv drops a remainder of image_size % patch_size pixels."""
    return self.image_size // self.patch_size

  @property
  def num_patches(self) -> int:
    return self.grid_size ** 2

  @property
  def tanh_gelu(self) -> bool:
    return self.hidden_act in TANH_GELUS


PRESETS = {
    "So400m/14-384": SiglipConfig(),
    "B/16-224": SiglipConfig(image_size=224, patch_size=16, hidden_size=768, intermediate_size=3072,
                             num_hidden_layers=12, num_attention_heads=12),
    "tiny": SiglipConfig(image_size=62, patch_size=14, hidden_size=64, intermediate_size=176,
                         num_hidden_layers=2, num_attention_heads=4),
}

# big_vision models/vit.py decode_variant: (width, depth, mlp_dim, num_heads) by variant name
# (Table 2 of arXiv 2106.04560); the patch size follows the "/".
BIG_VISION_VARIANTS = {
    "mu": (32, 1, 128, 2), "Ti": (192, 12, 768, 3), "S": (384, 12, 1536, 6), "M": (512, 12, 2048, 8),
    "B": (768, 12, 3072, 12), "L": (1024, 24, 4096, 16), "So400m": (1152, 27, 4304, 16),
    "H": (1280, 32, 5120, 16), "g": (1408, 40, 6144, 16), "g-opt": (1536, 40, 6144, 16),
    "G": (1664, 48, 8192, 16), "G-opt": (1536, 48, 8192, 16), "e": (1792, 56, 15360, 16),
}


def load_config(directory: str) -> SiglipConfig:
  return config_files.load_config(SiglipConfig, directory, command="siglip")
