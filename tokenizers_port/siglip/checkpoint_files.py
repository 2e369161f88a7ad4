"""Reading the two released formats into float32 numpy arrays, without torch or TensorFlow.

- Hugging Face: `model.safetensors`, or shards listed by `model.safetensors.index.json` (bf16 / fp16 /
  f32, read with the safetensors library).
- big_vision: an `.npz` of flattened names ("params/img/Transformer/..."); numpy saves bfloat16
  as 2-byte void, which big_vision's utils.recover_dtype views back as bfloat16, as here.
"""

import json
import os

import ml_dtypes
import numpy as np


class CheckpointError(ValueError):
  """A one-line error naming the file (and key) at fault."""


def read_safetensors(path: str, keep=lambda key: True) -> dict[str, np.ndarray]:
  """{key: float32 array} for the keys `keep` accepts (the others are never read). safetensors'
  flax reader, since its numpy one has no bfloat16 (released SigLIP weights are bf16 or f32)."""
  from safetensors import SafetensorError, safe_open
  try:
    with safe_open(path, framework="flax") as f:
      out = {}
      for key in f.keys():
        if not keep(key):
          continue
        arr = np.asarray(f.get_tensor(key))
        if not np.issubdtype(arr.dtype, np.floating) and arr.dtype != ml_dtypes.bfloat16:
          raise CheckpointError(f"{path}: key {key!r} has dtype {arr.dtype}, expected a float type")
        out[key] = arr.astype(np.float32)
      return out
  except SafetensorError as e:
    raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None


def hf_weight_files(directory: str) -> list[str]:
  """model.safetensors, or the shards model.safetensors.index.json names."""
  single = os.path.join(directory, "model.safetensors")
  index = os.path.join(directory, "model.safetensors.index.json")
  if os.path.exists(single):
    return [single]
  if os.path.exists(index):
    with open(index) as f:
      shards = sorted(set(json.load(f)["weight_map"].values()))
    files = [os.path.join(directory, s) for s in shards]
    for f in files:
      if not os.path.exists(f):
        raise CheckpointError(f"{index}: names shard {os.path.basename(f)}, which is missing")
    return files
  raise CheckpointError(f"{single}: no such file (nor model.safetensors.index.json); expected a "
                        "Hugging Face SiglipVisionModel or SiglipModel folder")


def read_hf_weights(directory: str, keep) -> tuple[dict[str, np.ndarray], dict[str, str]]:
  """(key -> float32 array, key -> file it came from) over all weight files of the folder."""
  sd, source = {}, {}
  for path in hf_weight_files(directory):
    for k, v in read_safetensors(path, keep).items():
      sd[k], source[k] = v, path
  return sd, source


def read_json(path: str, what: str) -> dict:
  if not os.path.exists(path):
    raise CheckpointError(f"{path}: no such file ({what})")
  with open(path) as f:
    try:
      return json.load(f)
    except ValueError as e:
      raise CheckpointError(f"{path}: not valid JSON ({e})") from None


def _recover_dtype(a: np.ndarray) -> np.ndarray:
  if a.dtype.type is np.void and a.itemsize == 2:
    return a.view(ml_dtypes.bfloat16)
  return a


def _open_npz(path: str):
  if not os.path.exists(path):
    raise CheckpointError(f"{path}: no such big_vision checkpoint")
  try:
    return np.load(path, allow_pickle=False)
  except (ValueError, OSError) as e:
    raise CheckpointError(f"{path}: not a readable .npz ({e})") from None


def npz_keys(path: str) -> list[str]:
  with _open_npz(path) as npz:
    return list(npz.files)


def read_npz(path: str, keep=lambda key: True) -> dict[str, np.ndarray]:
  """{flattened name: float32 array} of a big_vision .npz, for the names `keep` accepts."""
  with _open_npz(path) as npz:
    return {k: _recover_dtype(npz[k]).astype(np.float32) for k in npz.files if keep(k)}
