"""Parameter names: our flax paths <-> the released PyTorch `state_dict` keys, per flavour.

Our tree uses taming's names, so taming needs only the leaf renamed. LlamaGen names the same
modules differently (`conv_blocks.{i}.res.{j}`, `mid.0/1/2`) and stores the decoder levels
coarsest first, so its level index is flipped.
"""

import re

import numpy as np

# Buffers in the released checkpoints that inference does not use.
IGNORED_PREFIXES = {"taming": ("loss.",), "llamagen": ()}
IGNORED_KEYS = {"taming": (), "llamagen": ("quantize.codebook_used",)}

_LEAF = {"kernel": "weight", "scale": "weight", "bias": "bias", "embedding": "embedding.weight"}
_MID = {"block_1": "0", "attn_1": "1", "block_2": "2"}


def is_ignored(key: str, flavor: str) -> bool:
  return key in IGNORED_KEYS[flavor] or key.startswith(IGNORED_PREFIXES[flavor])


def torch_key(path: tuple, flavor: str, num_levels: int) -> str:
  """Flax parameter path, e.g. ('encoder', 'down', 0, 'block', 1, 'conv1', 'kernel') -> torch key."""
  parts = [str(p) for p in path[:-1]] + [_LEAF[path[-1]]]
  if flavor == "llamagen":
    parts = _to_llamagen(parts, num_levels)
  return ".".join(parts)


def _to_llamagen(parts: list[str], num_levels: int) -> list[str]:
  out = list(parts)
  for i, p in enumerate(parts):
    if p in ("down", "up") and i + 1 < len(parts):
      level = int(parts[i + 1])
      out[i] = "conv_blocks"
      # LlamaGen's decoder list runs from the coarsest level to the finest.
      out[i + 1] = str(num_levels - 1 - level if p == "up" else level)
      if i + 2 < len(parts) and parts[i + 2] == "block":
        out[i + 2] = "res"
    elif p == "mid" and i + 1 < len(parts):
      out[i + 1] = _MID[parts[i + 1]]
  return out


def torch_to_flax(path: tuple, w: np.ndarray) -> np.ndarray:
  """A torch tensor laid out as our parameter: conv kernels OIHW -> HWIO, others unchanged."""
  return np.ascontiguousarray(w.transpose(2, 3, 1, 0)) if path[-1] == "kernel" else w


def torch_shape(path: tuple, flax_shape: tuple) -> tuple:
  if path[-1] == "kernel":
    h, w, i, o = flax_shape
    return (o, i, h, w)
  return tuple(flax_shape)


def level_prefixes(flavor: str, num_levels: int):
  """(encoder level prefix fn, decoder level prefix fn, res-block list name) in torch naming."""
  if flavor == "taming":
    return (lambda i: f"encoder.down.{i}", lambda i: f"decoder.up.{i}", "block")
  return (lambda i: f"encoder.conv_blocks.{i}",
          lambda i: f"decoder.conv_blocks.{num_levels - 1 - i}", "res")


def count_levels(keys, prefix: str) -> int:
  """Number of distinct `prefix.{i}.` indices among the keys (e.g. prefix 'encoder.down')."""
  pat = re.compile(re.escape(prefix) + r"\.(\d+)\.")
  found = {int(m.group(1)) for k in keys if (m := pat.match(k))}
  return max(found) + 1 if found else 0
