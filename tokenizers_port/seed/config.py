"""The SEED-Tokenizer-2 config: architecture (mostly read off the checkpoints), image policy.

Defaults are MIO-7B's image tokenizer (MIO-Team/MIO image_tokenizer/models/seed_qformer):
EVA-CLIP ViT-g/14 as BLIP-2 builds it (`create_eva_vit_g`: width 1408, 39 blocks, 16 heads of 88,
MLP 6144, LayerNorm eps 1e-6, q/v biases only, absolute position embeddings, no final norm), then
`ln_vision` (LayerNorm eps 1e-5); the causal Q-Former (bert-base-uncased sizes, cross-attention to
the image in every second layer, 32 queries); a 8192 x 32 codebook behind a 768-768-32 tanh MLP;
and the code -> unCLIP image-embedding path (`get_codebook_entry`).
"""

import dataclasses
from typing import ClassVar

from tokenizers_port import config_files
from tokenizers_port.config_files import CONFIG_FILE, save_config  # noqa: F401 (this module's API)

RESIZE_METHODS = ("linear", "cubic", "lanczos3", "nearest")
# CLIP's normalisation (clip_transform.yaml -> transforms.get_transform(type='clip')).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclasses.dataclass(frozen=True)
class SeedConfig(config_files.JsonConfig):
  LABEL: ClassVar[str] = "SEED"
  # EVA-CLIP ViT (patch embed conv with bias, class token, absolute positions, pre-norm blocks).
  image_size: int = 224
  patch_size: int = 14
  vit_width: int = 1408
  vit_depth: int = 39
  vit_heads: int = 16
  vit_mlp_dim: int = 6144  # int(1408 * 4.3637)
  vit_eps: float = 1e-6
  ln_vision_eps: float = 1e-5  # blip2.LayerNorm: torch's default eps
  # Q-Former (BERT post-norm layers over the query tokens only).
  qformer_hidden: int = 768
  qformer_layers: int = 12
  qformer_heads: int = 12
  qformer_intermediate: int = 3072
  qformer_eps: float = 1e-12
  cross_attention_layers: tuple[int, ...] = (0, 2, 4, 6, 8, 10)
  num_query_tokens: int = 32
  # BertModel.forward makes the query self-attention causal only when there are exactly 32
  # queries (`query_embeds.shape[1] == 32`); the converter sets this from the query count.
  causal_queries: bool = True
  # Quantizer: encode_task_layer (hidden -> hidden, tanh, -> code_dim), plain Euclidean argmin.
  n_embed: int = 8192
  code_dim: int = 32
  # Codes -> unCLIP image embedding (Blip2QformerQuantizer.get_codebook_entry).
  image_blocks: int = 4
  image_block_heads: int = 12
  image_block_mlp_dim: int = 3072
  image_block_eps: float = 1e-6
  image_down_dims: tuple[int, ...] = (256, 128, 32)
  unclip_dim: int = 1024
  # Image policy of `encode` (uint8 in): squash-resize to image_size x image_size, then CLIP
  # mean/std. MIO's tokenize_images uses clip_transform.yaml: transforms.Resize((224, 224)) on a
  # PIL image, i.e. PIL bilinear (antialiased when shrinking).
  resize_method: str = "linear"
  antialias: bool = True
  mean: tuple[float, ...] = CLIP_MEAN
  std: tuple[float, ...] = CLIP_STD

  def __post_init__(self):
    checks = [
        (self.image_size % self.patch_size == 0, "image_size",
         f"a multiple of patch_size={self.patch_size}"),
        (self.vit_width % self.vit_heads == 0, "vit_heads",
         f"a divisor of vit_width={self.vit_width}"),
        (self.qformer_hidden % self.qformer_heads == 0, "qformer_heads",
         f"a divisor of qformer_hidden={self.qformer_hidden}"),
        (self.qformer_hidden % self.image_block_heads == 0, "image_block_heads",
         f"a divisor of qformer_hidden={self.qformer_hidden}"),
        (all(0 <= i < self.qformer_layers for i in self.cross_attention_layers),
         "cross_attention_layers", f"layer indices below qformer_layers={self.qformer_layers}"),
        (self.resize_method in RESIZE_METHODS, "resize_method", f"one of {RESIZE_METHODS}"),
        (len(self.mean) == len(self.std) == 3, "mean", "3 values (and std too)"),
    ]
    for ok, key, want in checks:
      if not ok:
        raise ValueError(f"SEED config: {key}={getattr(self, key)!r} must be {want}")

  @property
  def grid_size(self) -> int:
    return self.image_size // self.patch_size

  @property
  def codes_per_image(self) -> int:
    return self.num_query_tokens


def load_config(directory: str) -> SeedConfig:
  return config_files.load_config(SeedConfig, directory, command="seed")
