"""Parameter names: our flax paths <-> HF SiglipVisionModel state_dict keys and big_vision ViT keys.

HF: our attribute paths are its module names (kernel/scale -> weight). Its MAP head's
nn.MultiheadAttention packs q, k, v into in_proj_weight [3D, D] / in_proj_bias [3D] (rows q, k, v);
`split_in_proj` unpacks them into q_proj / k_proj / v_proj keys first.
big_vision (models/vit.py, flax linen; as HF's convert_siglip_to_hf.py maps them): embedding (conv,
HWIO), pos_embedding [1, L, D], Transformer/encoderblock_{i}/{LayerNorm_0, MultiHeadDotProductAttention_0
(query/key/value kernels [D, H, D/H], biases [H, D/H]; out kernel [H, D/H, D]), LayerNorm_1,
MlpBlock_0/Dense_0, Dense_1}, Transformer/encoder_norm, MAPHead_0/{probe, MultiHeadDotProductAttention_0,
LayerNorm_0, MlpBlock_0}. A scanned encoder (`scan=True`) stores one Transformer/encoderblock with
a leading depth axis; `unscan` splits it as big_vision's scan_to_pyloop does.
"""

import re

import numpy as np

_HF_LEAF = {"kernel": "weight", "scale": "weight", "bias": "bias"}
_HF_BARE = {"position_embedding": "weight", "probe": None}  # bare nn.Parameter / nn.Embedding


def hf_key(path: tuple) -> str:
  """('encoder', 'layers', 0, 'mlp', 'fc1', 'kernel') -> 'encoder.layers.0.mlp.fc1.weight'."""
  *mods, leaf = [str(p) for p in path]
  if leaf in _HF_BARE:
    suffix = _HF_BARE[leaf]
    return ".".join(mods + [leaf] + ([suffix] if suffix else []))
  return ".".join(mods + [_HF_LEAF[leaf]])


def hf_shape(path: tuple, flax_shape: tuple) -> tuple:
  """Linear weights [out, in]; conv OIHW; everything else as ours."""
  if path[-1] == "kernel":
    if len(flax_shape) == 2:
      return tuple(reversed(flax_shape))
    h, w, i, o = flax_shape
    return (o, i, h, w)
  return tuple(flax_shape)


def hf_to_flax(path: tuple, w: np.ndarray) -> np.ndarray:
  if path[-1] == "kernel":
    return np.ascontiguousarray(w.T if w.ndim == 2 else w.transpose(2, 3, 1, 0))
  return w


def split_in_proj(sd: dict, prefix: str = "head.attention.") -> dict:
  """nn.MultiheadAttention's packed in_proj_{weight,bias} -> {q,k,v}_proj.{weight,bias} (a copy of
  sd). A packed tensor whose first axis is not a multiple of 3 raises ValueError naming it."""
  sd = dict(sd)
  for leaf in ("weight", "bias"):
    key = f"{prefix}in_proj_{leaf}"
    if key in sd:
      packed = sd.pop(key)
      if packed.shape[0] % 3:
        raise ValueError(f"key {key!r} has shape {tuple(packed.shape)}, expected [3 * hidden, ...]")
      for name, part in zip("qkv", np.split(packed, 3, axis=0)):
        sd[f"{prefix}{name}_proj.{leaf}"] = part
  return sd


def packed_name(key: str) -> str:
  """The HF key a (split) q/k/v_proj key of the MAP head came from, for error messages."""
  m = re.match(r"^(.*head\.attention\.)[qkv]_proj\.(weight|bias)$", key)
  return f"{m.group(1)}in_proj_{m.group(2)}" if m else key


# (our dotted path pattern, big_vision key), first match wins.
_ATTN = {"q": "query", "k": "key", "v": "value", "out": "out"}
_BV_RULES = [
    (r"^embeddings\.patch_embedding\.(kernel|bias)$", r"embedding/\1"),
    (r"^embeddings\.position_embedding$", "pos_embedding"),
    (r"^encoder\.layers\.(\d+)\.layer_norm1\.", r"Transformer/encoderblock_\1/LayerNorm_0/"),
    (r"^encoder\.layers\.(\d+)\.layer_norm2\.", r"Transformer/encoderblock_\1/LayerNorm_1/"),
    (r"^encoder\.layers\.(\d+)\.self_attn\.(q|k|v|out)_proj\.",
     lambda m: f"Transformer/encoderblock_{m.group(1)}/MultiHeadDotProductAttention_0/{_ATTN[m.group(2)]}/"),
    (r"^encoder\.layers\.(\d+)\.mlp\.fc([12])\.",
     lambda m: f"Transformer/encoderblock_{m.group(1)}/MlpBlock_0/Dense_{int(m.group(2)) - 1}/"),
    (r"^post_layernorm\.", "Transformer/encoder_norm/"),
    (r"^head\.probe$", "MAPHead_0/probe"),
    (r"^head\.attention\.(q|k|v|out)_proj\.",
     lambda m: f"MAPHead_0/MultiHeadDotProductAttention_0/{_ATTN[m.group(1)]}/"),
    (r"^head\.layernorm\.", "MAPHead_0/LayerNorm_0/"),
    (r"^head\.mlp\.fc([12])\.", lambda m: f"MAPHead_0/MlpBlock_0/Dense_{int(m.group(1)) - 1}/"),
]


def big_vision_key(path: tuple) -> str:
  """('encoder', 'layers', 3, 'self_attn', 'q_proj', 'kernel') ->
  'Transformer/encoderblock_3/MultiHeadDotProductAttention_0/query/kernel' (below the tower's prefix)."""
  name = ".".join(str(p) for p in path)
  for pat, rep in _BV_RULES:
    new, n = re.subn(pat, rep, name)
    if n:
      return new
  raise KeyError(f"no big_vision name for parameter {name!r}")


def _is_qkv(path: tuple) -> bool:
  return len(path) >= 2 and path[-2] in ("q_proj", "k_proj", "v_proj")


def big_vision_shape(heads: int):
  """Our shape -> big_vision's: attention projections keep a heads axis, pos_embedding a batch axis."""
  def shape(path: tuple, flax_shape: tuple) -> tuple:
    if path[-1] == "position_embedding":
      return (1,) + tuple(flax_shape)
    if _is_qkv(path):
      d = flax_shape[-1]
      return (flax_shape[0], heads, d // heads) if path[-1] == "kernel" else (heads, d // heads)
    if path[-2:] == ("out_proj", "kernel"):
      d_in, d_out = flax_shape
      return (heads, d_in // heads, d_out)
    return tuple(flax_shape)
  return shape


def big_vision_to_flax(path: tuple, w: np.ndarray) -> np.ndarray:
  """Flatten the heads / batch axes back: DenseGeneral [D, H, Dh] -> [D, H*Dh] etc."""
  if path[-1] == "position_embedding":
    return w[0]
  if _is_qkv(path):
    return w.reshape(w.shape[0], -1) if path[-1] == "kernel" else w.reshape(-1)
  if path[-2:] == ("out_proj", "kernel"):
    return w.reshape(-1, w.shape[-1])
  return w


SCANNED = "Transformer/encoderblock/"


def unscan(tower: dict) -> dict:
  """A scanned encoder (Transformer/encoderblock/... with a leading depth axis) -> per-block keys
  Transformer/encoderblock_{i}/...; a pyloop checkpoint is returned unchanged."""
  scanned = {k: v for k, v in tower.items() if k.startswith(SCANNED)}
  if not scanned:
    return tower
  if any(k.startswith("Transformer/encoderblock_") for k in tower):
    raise ValueError("holds both a scanned Transformer/encoderblock and per-block "
                     "Transformer/encoderblock_{i} keys")
  depths = {v.shape[0] for v in scanned.values()}
  if len(depths) != 1:
    raise ValueError(f"scanned Transformer/encoderblock arrays disagree on depth: {sorted(depths)}")
  out = {k: v for k, v in tower.items() if not k.startswith(SCANNED)}
  for k, v in scanned.items():
    for i in range(v.shape[0]):
      out[f"Transformer/encoderblock_{i}/{k[len(SCANNED):]}"] = v[i]
  return out
