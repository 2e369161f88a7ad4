"""A reduced-width Blip2QformerQuantizer from the vendored reference, random but realistic
weights, saved in the released two-file layout (seed_quantizer.pt + eva_vit_g.pth).

The reference's __init__ runs unchanged; only the three hooks that download weights
(init_tokenizer, init_vision_encoder, init_Qformer) are overridden to build the same module
types at small sizes with random initialisation.
"""

import dataclasses
from functools import partial

import numpy as np
import torch
from torch import nn
from transformers import BertConfig

from . import blip2, eva_vit
from .qformer_causual import BertLMHeadModel
from .qformer_quantizer import Blip2QformerQuantizer

# CLIP mean/std (clip_transform.yaml -> transforms.get_transform(type='clip')).
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


@dataclasses.dataclass(frozen=True)
class Sizes:
  img_size: int = 224
  patch: int = 14
  vit_width: int = 1408
  vit_depth: int = 39
  vit_heads: int = 16
  vit_mlp_ratio: float = 4.3637
  qformer_hidden: int = 768
  qformer_layers: int = 12
  qformer_heads: int = 12
  qformer_intermediate: int = 3072
  num_query: int = 32
  n_embed: int = 8192
  code_dim: int = 32


OFFICIAL = Sizes()
# Q-Former hidden 96: blocks_image hard-codes 12 heads (vit.Attention needs hidden % 12 == 0);
# the Q-Former itself gets 4 so a wrong head count would show.
SMALL = Sizes(img_size=56, vit_width=64, vit_depth=3, vit_heads=4, qformer_hidden=96,
              qformer_layers=3, qformer_heads=4, qformer_intermediate=192)


def build(sizes: Sizes, seed: int = 0) -> Blip2QformerQuantizer:
  torch.manual_seed(seed)

  class Reduced(Blip2QformerQuantizer):
    @classmethod
    def init_tokenizer(cls, truncation_side="right"):
      return None  # BertTokenizer.from_pretrained: network; unused by the image path

    def init_vision_encoder(self, model_name, img_size, drop_path_rate, use_grad_checkpoint,
                            precision, model_root_dir="models"):
      # create_eva_vit_g's arguments, sizes from `sizes`, no weight download, float32.
      visual_encoder = eva_vit.VisionTransformer(
          img_size=img_size, patch_size=sizes.patch, use_mean_pooling=False,
          embed_dim=sizes.vit_width, depth=sizes.vit_depth, num_heads=sizes.vit_heads,
          mlp_ratio=sizes.vit_mlp_ratio, qkv_bias=True, drop_path_rate=drop_path_rate,
          norm_layer=partial(nn.LayerNorm, eps=1e-6), use_checkpoint=use_grad_checkpoint)
      self.vit_name = model_name
      return visual_encoder, blip2.LayerNorm(visual_encoder.num_features)

    @classmethod
    def init_Qformer(cls, num_query_token, vision_width, cross_attention_freq=2):
      # Blip2Base.init_Qformer with BertConfig(sizes) for bert-base-uncased, random weights.
      config = BertConfig(hidden_size=sizes.qformer_hidden, num_hidden_layers=sizes.qformer_layers,
                          num_attention_heads=sizes.qformer_heads,
                          intermediate_size=sizes.qformer_intermediate)
      config.encoder_width = vision_width
      config.add_cross_attention = True
      config.cross_attention_freq = cross_attention_freq
      config.query_length = num_query_token
      qformer = BertLMHeadModel(config)
      query_tokens = nn.Parameter(torch.zeros(1, num_query_token, config.hidden_size))
      query_tokens.data.normal_(mean=0.0, std=config.initializer_range)
      return qformer, query_tokens

  model = Reduced(img_size=sizes.img_size, vit_precision="fp32", num_query_token=sizes.num_query,
                  codebook_embed_dim=sizes.code_dim, n_embed=sizes.n_embed)
  _perturb(model)
  return model.eval()


@torch.no_grad()
def _perturb(model: nn.Module) -> None:
  """Make every parameter matter: layer-norm scales 1 +- 0.1, biases (q/v biases too) and zero-
  initialised embeddings ~0.02, so a swapped or dropped tensor changes the outputs; Q-Former and
  task-layer weights at 1/sqrt(fan_in) (BERT's std 0.02 would leave the image's share of the
  query outputs, and so the image-dependence of the codes, tiny at these widths)."""
  for part in (model.Qformer, model.encode_task_layer):
    for m in part.modules():
      if isinstance(m, nn.Linear):
        m.weight.normal_(0.0, m.in_features ** -0.5)
  norms = {id(m.weight) for m in model.modules() if isinstance(m, nn.LayerNorm)}
  for name, p in model.named_parameters():
    if id(p) in norms:
      p.copy_(1 + 0.1 * torch.randn_like(p))
    elif name.endswith("bias") or name == "pos_embed_image":
      p.normal_(0.0, 0.02)


def normalize(images_uint8: np.ndarray) -> np.ndarray:
  """uint8 [B, S, S, 3] -> CLIP-normalised float32 NHWC (ToTensor + Normalize, layout aside)."""
  return ((images_uint8.astype(np.float32) / 255.0 - np.float32(MEAN)) / np.float32(STD)
          ).astype(np.float32)


@torch.no_grad()
def encode(model, x_nhwc: np.ndarray) -> dict[str, np.ndarray]:
  """The reference's get_codebook_indices on normalised NHWC images, with the Q-Former output and
  the quantizer input captured by a forward hook on encode_task_layer."""
  seen = {}
  hook = model.encode_task_layer.register_forward_hook(
      lambda m, inp, out: seen.update(query=inp[0].clone(), z=out.clone()))
  try:
    codes, _ = model.get_codebook_indices(torch.from_numpy(x_nhwc).permute(0, 3, 1, 2).contiguous())
  finally:
    hook.remove()
  return {"codes": codes.numpy(), "query": seen["query"].numpy(), "z": seen["z"].numpy()}


@torch.no_grad()
def embed_codes(model, codes: np.ndarray) -> np.ndarray:
  return model.get_codebook_entry(torch.from_numpy(codes).long()).numpy()


@torch.no_grad()
def calibrate_codebook(model, x_nhwc: np.ndarray, seed: int = 0, noise: float = 0.5) -> None:
  """Codebook rows drawn around real quantizer inputs (other images than the test's), so the
  nearest-code search makes close calls as with a trained codebook."""
  z = torch.from_numpy(encode(model, x_nhwc)["z"]).reshape(-1, model.quantize.e_dim)
  g = torch.Generator().manual_seed(seed)
  n = model.quantize.n_e
  rows = z[torch.randint(len(z), (n,), generator=g)]
  rows += noise * z.std(0) * torch.randn(rows.shape, generator=g)
  model.quantize.embedding.weight.copy_(rows)


def save_released_layout(model, seed_path: str, vit_path: str) -> None:
  """seed_quantizer.pt without the ViT (as released: loading it leaves the 511 ViT tensors
  missing) and eva_vit_g.pth with one more block plus a final norm and head that BLIP-2 skips."""
  sd = model.state_dict()
  torch.save({k: v for k, v in sd.items() if not k.startswith("visual_encoder.")}, seed_path)
  vit = {k[len("visual_encoder."):]: v for k, v in sd.items() if k.startswith("visual_encoder.")}
  depth = len(model.visual_encoder.blocks)
  for k in [k for k in vit if k.startswith(f"blocks.{depth - 1}.")]:
    vit[k.replace(f"blocks.{depth - 1}.", f"blocks.{depth}.")] = torch.randn_like(vit[k])
  width = model.visual_encoder.num_features
  vit.update({"norm.weight": torch.ones(width), "norm.bias": torch.zeros(width),
              "head.weight": torch.zeros(10, width), "head.bias": torch.zeros(10)})
  torch.save(vit, vit_path)
