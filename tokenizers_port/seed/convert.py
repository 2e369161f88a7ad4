"""Released SEED-Tokenizer-2 checkpoints -> Flax weights + config.json.

  python -m tokenizers_port.convert seed --torch-checkpoint seed_quantizer.pt \
      --vit-checkpoint eva_vit_g.pth --out DIR

As Blip2QformerQuantizer.from_pretrained builds it: the ViT weights come from eva_vit_g.pth
(keys without the `visual_encoder.` prefix), then seed_quantizer.pt (a flat state_dict of the
whole model; it overrides any ViT key it also holds). Sizes are read off the tensor shapes; what
shapes cannot tell (head counts, the ViT depth BLIP-2 keeps) are flags with the released
values as defaults. Keys the reference builds but never uses are dropped by name (torch_keys);
any other unknown key, a missing key or a wrong shape is an error naming the key and the file
(--drop-unknown drops unknown keys instead, as the reference's strict=False load does).
"""

import argparse
import math
import os
import re
import sys

import numpy as np

from tokenizers_port.seed import torch_keys
from tokenizers_port.seed.config import RESIZE_METHODS, SeedConfig, save_config
from tokenizers_port.seed.params_io import abstract_params, save_params
from tokenizers_port.torch_mapping import map_state_dict

VIT_PREFIX = "visual_encoder."


class ConvertError(ValueError):
  pass


def read_state_dict(path: str, what: str) -> dict[str, np.ndarray]:
  import torch  # Only the converter needs torch.
  if not os.path.exists(path):
    raise ConvertError(f"{path}: no such {what} checkpoint")
  sd = torch.load(path, map_location="cpu", weights_only=True)
  if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
    raise ConvertError(f"{path}: expected a flat state_dict of tensors ({what})")
  return {k: v.detach().cpu().float().numpy() for k, v in sd.items()}


def merged_state_dict(seed_path: str, vit_path: str | None) -> tuple[dict, dict]:
  """(key -> array, key -> source file) in the reference's load order (ViT, then SEED)."""
  sd, source = {}, {}
  if vit_path is not None:
    for k, v in read_state_dict(vit_path, "ViT").items():
      sd[VIT_PREFIX + k], source[VIT_PREFIX + k] = v, vit_path
  seed = read_state_dict(seed_path, "SEED")
  if vit_path is None and not any(k.startswith(VIT_PREFIX) for k in seed):
    raise ConvertError(f"{seed_path}: holds no visual_encoder weights; pass --vit-checkpoint "
                       "(eva_vit_g.pth)")
  for k, v in seed.items():
    sd[k], source[k] = v, seed_path
  return sd, source


def _get(sd, key, src: str, vit_src: str | None):
  """sd[key]; a missing ViT key is reported against the ViT file when one was given."""
  if key not in sd:
    if vit_src is not None and key.startswith(VIT_PREFIX):
      raise ConvertError(f"{vit_src}: missing key {key[len(VIT_PREFIX):]!r} ({key!r})")
    raise ConvertError(f"{src}: missing key {key!r}")
  return sd[key]


def _count(sd, prefix: str) -> int:
  pat = re.compile(re.escape(prefix) + r"\.(\d+)\.")
  found = {int(m.group(1)) for k in sd if (m := pat.match(k))}
  return max(found) + 1 if found else 0


def infer_config(sd: dict, src: str, vit_src: str | None, vit_depth: int, vit_heads: int | None,
                 qformer_heads: int, image_block_heads: int, **policy) -> SeedConfig:
  """The architecture implied by the tensor shapes (keys already filtered)."""
  g = lambda k: _get(sd, k, src, vit_src)  # noqa: E731
  width, _, patch, _ = g("visual_encoder.patch_embed.proj.weight").shape
  tokens = g("visual_encoder.pos_embed").shape[1] - 1
  grid = math.isqrt(tokens)
  if grid * grid != tokens:
    raise ConvertError(f"{src}: visual_encoder.pos_embed has {tokens} patch positions, "
                       "not a square")
  if vit_heads is None:
    if width % 88:
      raise ConvertError(f"{src}: ViT width {width} is not a multiple of EVA-g's head size 88; "
                         "pass --vit-heads")
    vit_heads = width // 88
  hidden = g("query_tokens").shape[2]
  layers = _count(sd, "Qformer.bert.encoder.layer")
  cross = tuple(i for i in range(layers)
                if f"Qformer.bert.encoder.layer.{i}.crossattention.self.query.weight" in sd)
  n_embed, code_dim = g("quantize.embedding.weight").shape
  n_down = _count(sd, "image_down")
  down = tuple(int(g(f"image_down.{i}.weight").shape[0]) for i in range(0, n_down, 2))
  return SeedConfig(
      image_size=int(grid * patch), patch_size=int(patch), vit_width=int(width),
      vit_depth=vit_depth, vit_heads=vit_heads,
      vit_mlp_dim=int(g("visual_encoder.blocks.0.mlp.fc1.weight").shape[0]),
      qformer_hidden=int(hidden), qformer_layers=layers, qformer_heads=qformer_heads,
      qformer_intermediate=int(
          g("Qformer.bert.encoder.layer.0.intermediate_query.dense.weight").shape[0]),
      cross_attention_layers=cross, num_query_tokens=int(g("query_tokens").shape[1]),
      causal_queries=int(g("query_tokens").shape[1]) == 32,
      n_embed=int(n_embed), code_dim=int(code_dim),
      image_blocks=_count(sd, "blocks_image"), image_block_heads=image_block_heads,
      image_block_mlp_dim=int(g("blocks_image.0.mlp.fc1.weight").shape[0]),
      image_down_dims=down, unclip_dim=int(g("distill_image_proj.weight").shape[0]), **policy)


def convert_state_dict(sd: dict, source: dict, cfg: SeedConfig, src: str, vit_src: str | None,
                       drop_unknown: bool = False) -> tuple[dict, list[str]]:
  """(our parameters, dropped unknown keys); missing, mis-shaped or (strict) unknown keys raise."""
  params, unknown = map_state_dict(
      sd, abstract_params(cfg), key_of=torch_keys.torch_key, get=lambda k: _get(sd, k, src, vit_src),
      torch_shape=torch_keys.torch_shape, torch_to_flax=torch_keys.torch_to_flax,
      source_of=source.__getitem__, error=ConvertError)
  if unknown and not drop_unknown:
    raise ConvertError(f"{source[unknown[0]]}: unknown key {unknown[0]!r}"
                       + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "")
                       + "; --drop-unknown drops them as the reference's strict=False load does")
  return params, unknown


def convert(checkpoint: str, out: str, vit_checkpoint: str | None = None, vit_depth: int = 39,
            vit_heads: int | None = None, qformer_heads: int = 12, image_block_heads: int = 12,
            drop_unknown: bool = False, **policy) -> tuple[SeedConfig, list[str]]:
  sd, source = merged_state_dict(checkpoint, vit_checkpoint)
  sd = {k: v for k, v in sd.items() if not torch_keys.is_ignored(k, vit_depth)}
  cfg = infer_config(sd, checkpoint, vit_checkpoint, vit_depth, vit_heads, qformer_heads,
                     image_block_heads, **policy)
  params, dropped = convert_state_dict(sd, source, cfg, checkpoint, vit_checkpoint, drop_unknown)
  os.makedirs(out, exist_ok=True)
  save_params(params, out)
  save_config(cfg, out)
  return cfg, dropped


def main(argv=None):
  p = argparse.ArgumentParser(prog="python -m tokenizers_port.convert seed",
                              description=__doc__.split("\n")[0])
  p.add_argument("--torch-checkpoint", required=True, help="seed_quantizer.pt")
  p.add_argument("--vit-checkpoint", help="eva_vit_g.pth (unless the SEED file holds the ViT)")
  p.add_argument("--out", required=True)
  p.add_argument("--vit-depth", type=int, default=39, help="ViT blocks kept (BLIP-2: 39 of 40)")
  p.add_argument("--vit-heads", type=int, help="default: width / 88 (EVA-CLIP-g)")
  p.add_argument("--qformer-heads", type=int, default=12, help="bert-base-uncased: 12")
  p.add_argument("--image-block-heads", type=int, default=12, help="blocks_image heads: 12")
  p.add_argument("--resize-method", default="linear", choices=RESIZE_METHODS,
                 help="linear: clip_transform.yaml's Resize (PIL bilinear); cubic: "
                      "ImageTokenizer.processor's (interpolation=3)")
  p.add_argument("--drop-unknown", action="store_true",
                 help="drop unknown keys (as the reference's strict=False load) instead of failing")
  a = p.parse_args(argv)
  try:
    cfg, dropped = convert(a.torch_checkpoint, a.out, a.vit_checkpoint, a.vit_depth, a.vit_heads,
                           a.qformer_heads, a.image_block_heads, a.drop_unknown,
                           resize_method=a.resize_method)
  except (ConvertError, ValueError) as e:
    sys.exit(f"error: {e}")
  if dropped:
    print(f"dropped {len(dropped)} unknown keys, e.g. {dropped[:3]}")
  print(f"wrote {a.out}: SEED tokenizer, ViT {cfg.vit_width} x {cfg.vit_depth} at "
        f"{cfg.image_size} px, Q-Former {cfg.qformer_hidden} x {cfg.qformer_layers} "
        f"(cross-attention in {list(cfg.cross_attention_layers)}), {cfg.num_query_tokens} codes "
        f"per image from {cfg.n_embed} x {cfg.code_dim}")
