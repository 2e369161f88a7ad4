"""SEED-Tokenizer-2 (MIO-7B's image tokenizer) in flax.nnx: EVA-CLIP ViT-g/14, causal Q-Former,
8192 x 32 codebook; 32 codes per image.

  tok = tokenizers_port.seed.load(DIR)     # DIR from `python -m tokenizers_port.convert seed`
  codes = tok.encode(uint8_images)         # int32 [B, 32]
  embeds = tok.embed_codes(codes)          # float32 [B, 1024]: the unCLIP image embedding

Pixels from codes: `unclip_decode` (PyTorch + diffusers, the `decode` extra).
"""

from tokenizers_port.seed.config import SeedConfig
from tokenizers_port.seed.load import SeedTokenizer, load

__all__ = ["SeedConfig", "SeedTokenizer", "load"]
