"""SigLIP's vision tower (So400m/14 at 384 px, B/16 at 224 px, ...) in flax.nnx, as transformers'
SiglipVisionModel; converted from Hugging Face folders or big_vision checkpoints.

  enc = tokenizers_port.siglip.load(DIR)   # DIR from `python -m tokenizers_port.convert siglip`
  patches = enc.encode_patches(uint8_images)   # float32 [B, L, d]: post-layernorm patch sequence
  pooled = enc.encode_pooled(uint8_images)     # float32 [B, d]: the MAP head (when converted)
"""

from tokenizers_port.siglip.config import PRESETS, SiglipConfig
from tokenizers_port.siglip.load import SiglipEncoder, load

__all__ = ["PRESETS", "SiglipConfig", "SiglipEncoder", "load"]
