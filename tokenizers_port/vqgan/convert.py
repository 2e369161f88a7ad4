"""Released PyTorch VQGAN checkpoint -> Flax weights + config.json.

  python -m tokenizers_port.convert vqgan --flavor taming|llamagen --torch-checkpoint PATH --out DIR

The architecture is read off the checkpoint's tensor shapes (channel multipliers, res blocks per
level, where attention sits, code count and width), so no size is hard-coded; every key must then
be exactly the set that architecture has, with matching shapes.
taming: a Lightning checkpoint whose `state_dict` also holds the GAN loss (`loss.*`, dropped).
LlamaGen: the model under `model` (or `ema` with --weights ema).
"""

import argparse
import os
import sys

import numpy as np

from tokenizers_port.vqgan import torch_keys
from tokenizers_port.vqgan.config import (CROP_POLICIES, FLAVORS, RESIZE_METHODS, RESIZE_POLICIES,
                                          VQGANConfig, save_config)
from tokenizers_port.torch_mapping import map_state_dict
from tokenizers_port.vqgan.params_io import abstract_params, save_params


class ConvertError(ValueError):
  pass


def load_state_dict(path: str, flavor: str, weights: str = "model") -> dict[str, np.ndarray]:
  import torch  # Only the converter needs torch.
  if not os.path.exists(path):
    raise ConvertError(f"{path}: no such checkpoint")
  try:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
  except Exception:  # Lightning checkpoints may pickle callbacks/hparams objects; trusted file.
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
  field = "state_dict" if flavor == "taming" else weights
  if not isinstance(ckpt, dict) or field not in ckpt:
    have = sorted(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
    raise ConvertError(f"{path}: no {field!r} entry in the {flavor} checkpoint (has {have})")
  return {k: v.detach().cpu().float().numpy() for k, v in ckpt[field].items()
          if not torch_keys.is_ignored(k, flavor)}


def _get(sd, key, source):
  if key not in sd:
    raise ConvertError(f"{source}: missing key {key!r}")
  return sd[key]


def _mult(sd, key, ch, source):
  out = _get(sd, key, source).shape[0]
  if out % ch:
    raise ConvertError(f"{source}: {key!r} has {out} channels, not a multiple of ch={ch}")
  return out // ch


def infer_config(sd: dict, flavor: str, source: str, **policy) -> VQGANConfig:
  """The architecture implied by the tensor shapes of a (filtered) state_dict."""
  ch, in_channels = _get(sd, "encoder.conv_in.weight", source).shape[:2]
  enc_list = "encoder.down" if flavor == "taming" else "encoder.conv_blocks"
  n = torch_keys.count_levels(sd, enc_list)
  if n == 0:
    raise ConvertError(f"{source}: no keys under {enc_list!r}; is --flavor {flavor} right?")
  enc, dec, blk = torch_keys.level_prefixes(flavor, n)
  nrb = torch_keys.count_levels(sd, f"{enc(0)}.{blk}")
  n_embed, embed_dim = _get(sd, "quantize.embedding.weight", source).shape
  return VQGANConfig(
      flavor=flavor,
      in_channels=int(in_channels),
      out_channels=int(_get(sd, "decoder.conv_out.weight", source).shape[0]),
      ch=int(ch),
      encoder_ch_mult=tuple(_mult(sd, f"{enc(i)}.{blk}.0.conv1.weight", ch, source)
                            for i in range(n)),
      decoder_ch_mult=tuple(_mult(sd, f"{dec(i)}.{blk}.0.conv1.weight", ch, source)
                            for i in range(n)),
      num_res_blocks=nrb,
      encoder_attn_levels=tuple(i for i in range(n) if f"{enc(i)}.attn.0.q.weight" in sd),
      decoder_attn_levels=tuple(i for i in range(n) if f"{dec(i)}.attn.0.q.weight" in sd),
      z_channels=int(_get(sd, "encoder.conv_out.weight", source).shape[0]),
      embed_dim=int(embed_dim),
      n_embed=int(n_embed),
      l2_norm=flavor == "llamagen",
      **policy)


def convert_state_dict(sd: dict, cfg: VQGANConfig, source: str) -> dict[tuple, np.ndarray]:
  """Our parameters from a torch state_dict; unknown, missing or mis-shaped keys raise."""
  params, unknown = map_state_dict(
      sd, abstract_params(cfg), key_of=lambda p: torch_keys.torch_key(p, cfg.flavor, cfg.num_levels),
      get=lambda k: _get(sd, k, source), torch_shape=torch_keys.torch_shape,
      torch_to_flax=torch_keys.torch_to_flax, source_of=lambda k: source, error=ConvertError)
  if unknown:
    raise ConvertError(f"{source}: unknown key {unknown[0]!r}"
                       + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""))
  return params


def convert(checkpoint: str, flavor: str, out: str, weights: str = "model", **policy) -> VQGANConfig:
  sd = load_state_dict(checkpoint, flavor, weights)
  cfg = infer_config(sd, flavor, checkpoint, **policy)
  params = convert_state_dict(sd, cfg, checkpoint)
  os.makedirs(out, exist_ok=True)
  save_params(params, out)
  save_config(cfg, out)
  return cfg


def main(argv=None):
  p = argparse.ArgumentParser(prog="python -m tokenizers_port.convert vqgan",
                              description=__doc__.split("\n")[0])
  p.add_argument("--flavor", required=True, choices=FLAVORS)
  p.add_argument("--torch-checkpoint", required=True)
  p.add_argument("--out", required=True)
  p.add_argument("--weights", default="model", choices=("model", "ema"),
                 help="LlamaGen only: which weights of the checkpoint to take")
  p.add_argument("--image-size", type=int, default=256, help="side of the square encode input")
  p.add_argument("--resize", default="shorter_side", choices=RESIZE_POLICIES)
  p.add_argument("--resize-method", default="cubic", choices=RESIZE_METHODS)
  p.add_argument("--crop", default="center", choices=CROP_POLICIES)
  a = p.parse_args(argv)
  try:
    cfg = convert(a.torch_checkpoint, a.flavor, a.out, a.weights, image_size=a.image_size,
                  resize=a.resize, resize_method=a.resize_method, crop=a.crop)
  except (ConvertError, ValueError) as e:
    sys.exit(f"error: {e}")
  print(f"wrote {a.out}: {cfg.flavor} VQGAN, {cfg.n_embed} codes x {cfg.embed_dim}, "
        f"ch_mult {list(cfg.encoder_ch_mult)}, {cfg.grid_size}x{cfg.grid_size} codes per image")
