"""VQGAN image tokenizer (taming-transformers f16 and LlamaGen VQ-16) in flax.nnx.

  tok = tokenizers_port.vqgan.load(DIR)      # DIR from `python -m tokenizers_port.convert vqgan`
  codes = tok.encode(uint8_images)           # int32 [B, h*w], raster order
  images = tok.decode(codes)                 # uint8 [B, H, W, 3]
"""

from tokenizers_port.vqgan.config import VQGANConfig
from tokenizers_port.vqgan.load import VQGANTokenizer, load

__all__ = ["VQGANConfig", "VQGANTokenizer", "load"]
