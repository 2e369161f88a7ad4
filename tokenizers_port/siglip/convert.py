"""Released SigLIP vision towers -> Flax weights + config.json.

  python -m tokenizers_port.convert siglip --hf DIR --out OUT
  python -m tokenizers_port.convert siglip --big-vision CKPT.npz --res 384 [--variant So400m/14] --out OUT

--hf: a Hugging Face SiglipVisionModel or SiglipModel folder (config.json + model.safetensors or its
sharded index; the vision tower is taken, the text tower and logit scale/bias skipped); an optional
preprocessor_config.json sets the image policy (resample, rescale factor, mean, std).
--big-vision: a big_vision .npz (a SigLIP two-tower file: the `img` tower under params/img/ or img/;
or a bare ViT), per-block or scanned encoder. Sizes are read off the shapes; --res is needed (the
positions give only res // patch), --variant cross-checks them against big_vision's decode_variant.
A missing key, a wrong shape or an unknown key is a one-line error naming the file and key
(--drop-unknown drops unknown keys instead, as strict=False loading would).
"""

import argparse
import math
import os
import re
import sys

import numpy as np

from tokenizers_port.siglip import checkpoint_keys as keys
from tokenizers_port.siglip.checkpoint_files import (CheckpointError, npz_keys, read_hf_weights,
                                                     read_json, read_npz)
from tokenizers_port.siglip.config import (BIG_VISION_VARIANTS, CONFIG_FILE, RESAMPLE_CODES,
                                           SiglipConfig, save_config)
from tokenizers_port.siglip.params_io import abstract_params, save_params
from tokenizers_port.torch_mapping import map_state_dict

ConvertError = CheckpointError

# transformers' SiglipVisionConfig defaults (configuration_siglip.py): what a config.json that omits a
# key means (google/siglip-base-patch16-224's sets only patch_size).
HF_VISION_DEFAULTS = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                          num_attention_heads=12, num_channels=3, image_size=224, patch_size=16,
                          hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6, vision_use_head=True)
HF_VISION_PREFIX = "vision_model."
HF_OTHER_TOWER = ("text_model.", "logit_scale", "logit_bias")
BV_TOWER_PREFIXES = ("params/img/", "img/", "params/", "")


def _single(value, key: str, src: str) -> int:
  """image_size / patch_size: an int, or an [h, w] pair of equal values."""
  if isinstance(value, (list, tuple)):
    if len(value) != 2 or value[0] != value[1]:
      raise ConvertError(f"{src}: {key}={value!r}: only square sizes are supported")
    value = value[0]
  return int(value)


def hf_vision_config(path: str) -> dict:
  """SiglipVisionConfig values of a SiglipVisionModel or SiglipModel config.json (defaults filled)."""
  cfg = read_json(path, "Hugging Face config")
  if "vision_config" in cfg:
    vision = cfg["vision_config"] or {}
  elif cfg.get("model_type", "siglip_vision_model") == "siglip_vision_model":
    vision = cfg
  else:
    raise ConvertError(f"{path}: model_type {cfg.get('model_type')!r} is neither siglip nor "
                       "siglip_vision_model")
  values = {**HF_VISION_DEFAULTS, **{k: vision[k] for k in HF_VISION_DEFAULTS if k in vision}}
  if values.pop("num_channels") != 3:
    raise ConvertError(f"{path}: num_channels={vision['num_channels']!r}; only RGB (3) is supported")
  for k in ("image_size", "patch_size"):
    values[k] = _single(values[k], k, path)
  return values


def hf_image_policy(directory: str, image_size: int) -> dict:
  """SiglipConfig image-policy fields from an optional preprocessor_config.json."""
  path = os.path.join(directory, "preprocessor_config.json")
  if not os.path.exists(path):
    return {}
  p = read_json(path, "image processor config")
  for flag in ("do_resize", "do_rescale", "do_normalize"):
    if p.get(flag) is False:
      raise ConvertError(f"{path}: {flag}=false is not supported (encode_patches always does it)")
  size = p.get("size") or {}
  if {size.get("height", image_size), size.get("width", image_size)} != {image_size}:
    raise ConvertError(f"{path}: size={size!r}, but the model's image_size is {image_size}")
  policy = {}
  if "resample" in p:
    names = {v: k for k, v in RESAMPLE_CODES.items()}
    if p["resample"] not in names:
      raise ConvertError(f"{path}: resample={p['resample']!r} is not a PIL filter code {sorted(names)}")
    policy["resample"] = names[p["resample"]]
  if "rescale_factor" in p:
    policy["rescale_factor"] = float(p["rescale_factor"])
  for ours, theirs in (("mean", "image_mean"), ("std", "image_std")):
    if theirs in p:
      v = p[theirs]
      policy[ours] = tuple(float(x) for x in (v if isinstance(v, list) else [v] * 3))
  return policy


def _map(sd, cfg, key_of, shape, to_flax, source_of, missing_in: str, drop_unknown: bool):
  """(our parameters, dropped unknown keys) through torch_mapping.map_state_dict."""
  def get(key):
    if key not in sd:
      raise ConvertError(f"{missing_in}: missing key {key!r}")
    return sd[key]
  params, unknown = map_state_dict(sd, abstract_params(cfg), key_of=key_of, get=get, torch_shape=shape,
                                   torch_to_flax=to_flax, source_of=source_of, error=ConvertError)
  if unknown and not drop_unknown:
    raise ConvertError(f"{source_of(unknown[0])}: unknown key {unknown[0]!r}"
                       + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "")
                       + "; --drop-unknown drops them")
  return params, unknown


def convert_hf(directory: str, resample: str | None = None, drop_unknown: bool = False):
  """(config, params, dropped keys, notes) of a Hugging Face SigLIP folder."""
  vision = hf_vision_config(os.path.join(directory, CONFIG_FILE))
  sd, source = read_hf_weights(directory, keep=lambda k: not k.startswith(HF_OTHER_TOWER))
  prefix = HF_VISION_PREFIX if any(k.startswith(HF_VISION_PREFIX) for k in sd) else ""
  notes = []
  if vision["vision_use_head"] and not any(k.startswith(prefix + "head.") for k in sd):
    vision["vision_use_head"] = False
    notes.append("config asks for the MAP head but the weights have none: converted without it")
  policy = hf_image_policy(directory, vision["image_size"])
  if resample is not None:
    policy["resample"] = resample
  try:
    cfg = SiglipConfig(**vision, **policy)
  except ValueError as e:
    raise ConvertError(f"{os.path.join(directory, CONFIG_FILE)}: {e}") from None
  try:
    sd = keys.split_in_proj(sd, prefix + "head.attention.")
  except ValueError as e:
    raise ConvertError(f"{source[keys.packed_name(prefix + 'head.attention.q_proj.weight')]}: {e}") from None
  files = sorted(set(source.values()))
  source_of = lambda k: source.get(k) or source[keys.packed_name(k)]  # noqa: E731
  params, dropped = _map(sd, cfg, lambda p: prefix + keys.hf_key(p), keys.hf_shape, keys.hf_to_flax,
                         source_of, files[0] if len(files) == 1 else directory, drop_unknown)
  return cfg, params, dropped, notes


def _parse_variant(variant: str, path: str) -> tuple[tuple, int]:
  m = re.fullmatch(r"([\w-]+)/(\d+)", variant)
  if not m or m.group(1) not in BIG_VISION_VARIANTS:
    raise ConvertError(f"{path}: --variant {variant!r} is not NAME/PATCH with NAME one of "
                       f"{sorted(BIG_VISION_VARIANTS)}")
  return BIG_VISION_VARIANTS[m.group(1)], int(m.group(2))


def big_vision_config(tower: dict, path: str, prefix: str, res: int, variant: str | None,
                      resample: str) -> SiglipConfig:
  """The architecture implied by the image tower's shapes, checked against --res and --variant."""
  def g(k):
    if prefix + k not in tower:
      raise ConvertError(f"{path}: missing key {prefix + k!r}")
    return tower[prefix + k]
  kh, kw, cin, width = g("embedding/kernel").shape
  if kh != kw or cin != 3:
    raise ConvertError(f"{path}: key {prefix + 'embedding/kernel'!r} has shape {(kh, kw, cin, width)}, "
                       "expected a square RGB patch kernel [p, p, 3, width]")
  n = g("pos_embedding").shape[1]
  grid = math.isqrt(n)
  if grid * grid != n:
    raise ConvertError(f"{path}: key {prefix + 'pos_embedding'!r} holds {n} positions, not a square grid")
  if res // kh != grid:
    raise ConvertError(f"{path}: --res {res} with patch {kh} gives {res // kh} patches per side, but "
                       f"{prefix + 'pos_embedding'!r} has {grid} x {grid}")
  block = re.compile(re.escape(prefix) + r"Transformer/encoderblock_(\d+)/")
  depth = 1 + max((int(m.group(1)) for k in tower if (m := block.match(k))), default=-1)
  mlp = g("Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel").shape[1]
  heads = g("Transformer/encoderblock_0/MultiHeadDotProductAttention_0/query/kernel").shape[1]
  if variant is not None:
    (v_width, v_depth, v_mlp, v_heads), v_patch = _parse_variant(variant, path)
    for what, want, got, key in (("patch size", v_patch, kh, "embedding/kernel"),
                                 ("width", v_width, width, "embedding/kernel"),
                                 ("depth", v_depth, depth, "Transformer/encoderblock_*"),
                                 ("mlp_dim", v_mlp, mlp,
                                  "Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel"),
                                 ("num_heads", v_heads, heads,
                                  "Transformer/encoderblock_0/MultiHeadDotProductAttention_0/query/kernel")):
      if want != got:
        raise ConvertError(f"{path}: --variant {variant} has {what} {want}, the checkpoint {got} "
                           f"({prefix + key!r})")
  # big_vision's ViT: flax LayerNorm (epsilon 1e-6), nn.gelu (tanh approximation by default).
  return SiglipConfig(image_size=res, patch_size=int(kh), hidden_size=int(width), intermediate_size=int(mlp),
                      num_hidden_layers=depth, num_attention_heads=int(heads), layer_norm_eps=1e-6,
                      hidden_act="gelu_pytorch_tanh", vision_use_head=prefix + "MAPHead_0/probe" in tower,
                      resample=resample)


def convert_big_vision(path: str, res: int, variant: str | None = None, resample: str = "bicubic",
                       drop_unknown: bool = False):
  """(config, params, dropped keys, notes) of a big_vision checkpoint's image tower."""
  names = npz_keys(path)
  prefix = next((p for p in BV_TOWER_PREFIXES if p + "embedding/kernel" in names), None)
  if prefix is None:
    raise ConvertError(f"{path}: no image tower (no key 'params/img/embedding/kernel', "
                       "'img/embedding/kernel' or 'embedding/kernel')")
  tower = {k[len(prefix):]: v for k, v in read_npz(path, keep=lambda k: k.startswith(prefix)).items()}
  try:
    tower = keys.unscan(tower)
  except ValueError as e:
    raise ConvertError(f"{path}: {e}") from None
  tower = {prefix + k: v for k, v in tower.items()}
  cfg = big_vision_config(tower, path, prefix, res, variant, resample)
  params, dropped = _map(tower, cfg, lambda p: prefix + keys.big_vision_key(p),
                         keys.big_vision_shape(cfg.num_attention_heads), keys.big_vision_to_flax,
                         lambda k: path, path, drop_unknown)
  return cfg, params, dropped, []


def write(cfg: SiglipConfig, params: dict[tuple, np.ndarray], out: str) -> None:
  os.makedirs(out, exist_ok=True)
  save_params(params, out)
  save_config(cfg, out)


def main(argv=None):
  p = argparse.ArgumentParser(prog="python -m tokenizers_port.convert siglip",
                              description=__doc__.split("\n")[0])
  src = p.add_mutually_exclusive_group(required=True)
  src.add_argument("--hf", help="Hugging Face SiglipVisionModel / SiglipModel folder")
  src.add_argument("--big-vision", help="big_vision .npz checkpoint")
  p.add_argument("--out", required=True)
  p.add_argument("--res", type=int, help="--big-vision: the image size it was trained at (e.g. 384)")
  p.add_argument("--variant", help="--big-vision: cross-check the shapes, e.g. So400m/14 or B/16")
  p.add_argument("--resample", choices=tuple(RESAMPLE_CODES),
                 help="PIL resize filter (default: preprocessor_config.json's, else bicubic)")
  p.add_argument("--drop-unknown", action="store_true",
                 help="drop unknown keys of the vision tower instead of failing")
  a = p.parse_args(argv)
  try:
    if a.hf is not None:
      cfg, params, dropped, notes = convert_hf(a.hf, a.resample, a.drop_unknown)
    else:
      if a.res is None:
        raise ConvertError(f"{a.big_vision}: --res is required with --big-vision (e.g. --res 384)")
      cfg, params, dropped, notes = convert_big_vision(a.big_vision, a.res, a.variant,
                                                       a.resample or "bicubic", a.drop_unknown)
    write(cfg, params, a.out)
  except (ConvertError, ValueError) as e:
    sys.exit(f"error: {e}")
  for note in notes:
    print(f"note: {note}")
  if dropped:
    print(f"dropped {len(dropped)} unknown keys, e.g. {dropped[:3]}")
  print(f"wrote {a.out}: SigLIP vision tower {cfg.hidden_size} x {cfg.num_hidden_layers} layers, "
        f"{cfg.num_attention_heads} heads, MLP {cfg.intermediate_size}, {cfg.image_size} px / patch "
        f"{cfg.patch_size} = {cfg.num_patches} patches, MAP head {'yes' if cfg.vision_use_head else 'no'}")
