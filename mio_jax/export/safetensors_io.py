"""Hugging Face safetensors checkpoints: a streaming, size-sharded writer and a lazy reader.

Layout (as `save_pretrained` writes it): one `model.safetensors`, or above `max_shard_bytes`
`model-00001-of-0000N.safetensors` ... plus `model.safetensors.index.json` mapping every tensor
name to its file. huggingface_hub's splitter assigns the tensors to shards from their sizes alone,
before any is read; the writer then holds at most the shards still waiting for a tensor (in the
export's order, one shard plus one tensor larger than a shard).
"""

from __future__ import annotations

import json
import os

import numpy as np
from huggingface_hub import constants as hf_constants
from huggingface_hub import split_state_dict_into_shards_factory
from safetensors import safe_open
from safetensors.numpy import save_file

from mio_jax import storage

SINGLE = hf_constants.SAFETENSORS_SINGLE_FILE  # model.safetensors
INDEX = hf_constants.SAFETENSORS_INDEX_FILE  # model.safetensors.index.json
DEFAULT_MAX_SHARD_BYTES = 5 * 2**30  # transformers' default max_shard_size ("5GB")


def is_model_file(name: str) -> bool:
  """A file of a safetensors checkpoint (single, shard or index), which a new export replaces."""
  return name in (SINGLE, INDEX) or (name.startswith("model-") and name.endswith(".safetensors"))


class ShardedWriter:
  """Writes the tensors `planned` ({name: bytes}) into local `out_dir`, as they are added.

  Each shard goes to a temporary file once its last tensor arrives; close() renames them all into
  place and then writes the index, so a reader never sees a partial checkpoint's index.
  """

  def __init__(self, out_dir: str, planned: dict[str, int], max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES):
    self.out_dir, self.planned = out_dir, dict(planned)
    self.split = split_state_dict_into_shards_factory(
        self.planned, get_storage_size=int, filename_pattern=hf_constants.SAFETENSORS_WEIGHTS_FILE_PATTERN,
        max_shard_size=max_shard_bytes)
    self._waiting = {f: set(names) for f, names in self.split.filename_to_tensors.items()}
    self._pending: dict[str, dict[str, np.ndarray]] = {f: {} for f in self._waiting}
    self._written: dict[str, str] = {}  # file name -> its temporary
    os.makedirs(out_dir, exist_ok=True)
    # A stale index or shard from an earlier export would shadow (or mix with) this one.
    for name in os.listdir(out_dir):
      if is_model_file(name):
        os.remove(os.path.join(out_dir, name))

  def add(self, name: str, tensor: np.ndarray) -> None:
    if name not in self.planned:
      raise ValueError(f"tensor {name} was not planned")
    if tensor.nbytes != self.planned[name]:
      raise ValueError(f"tensor {name} has {tensor.nbytes} bytes, {self.planned[name]} planned")
    file = self.split.tensor_to_filename[name]
    if name not in self._waiting[file]:
      raise ValueError(f"tensor {name} written twice")
    self._waiting[file].remove(name)
    self._pending[file][name] = np.ascontiguousarray(tensor)
    if not self._waiting[file]:
      tmp = storage.temp_path(os.path.join(self.out_dir, file))
      save_file(self._pending.pop(file), tmp, metadata={"format": "pt"})
      storage.default_mode(tmp)  # safetensors keeps mkstemp's 0600
      self._written[file] = tmp

  def close(self) -> list[str]:
    """Names the shard files, writes the index if sharded; returns the file names."""
    missing = sorted(n for names in self._waiting.values() for n in names)
    if missing:
      raise ValueError(f"{len(missing)} planned tensors were never added, e.g. {missing[0]}")
    files = list(self.split.filename_to_tensors)
    for file in files:
      storage.commit(self._written[file], os.path.join(self.out_dir, file))
    if self.split.is_sharded:
      index = {"metadata": self.split.metadata, "weight_map": self.split.tensor_to_filename}
      storage.atomic_write_text(os.path.join(self.out_dir, INDEX),
                                json.dumps(index, indent=2, sort_keys=True) + "\n")
    return files


class Reader:
  """Tensors of a HF checkpoint directory by name, read one at a time (no full load)."""

  def __init__(self, hf_dir: str):
    self.hf_dir = hf_dir
    index, single = os.path.join(hf_dir, INDEX), os.path.join(hf_dir, SINGLE)
    if os.path.isfile(index):
      with open(index) as f:
        self.files = json.load(f)["weight_map"]
    elif os.path.isfile(single):
      with safe_open(single, framework="numpy") as f:
        self.files = {k: SINGLE for k in f.keys()}
    else:
      bins = [n for n in os.listdir(hf_dir) if n.endswith(".bin")]
      hint = (f" (found {bins[0]}: re-save it with save_pretrained(..., safe_serialization=True))"
              if bins else "")
      raise FileNotFoundError(f"{hf_dir}: no {SINGLE} or {INDEX}{hint}")
    self._open: dict[str, object] = {}

  def names(self) -> set[str]:
    return set(self.files)

  def __contains__(self, name: str) -> bool:
    return name in self.files

  def get(self, name: str) -> np.ndarray:
    if name not in self.files:
      raise KeyError(f"{self.hf_dir}: tensor {name} is missing from the checkpoint")
    path = os.path.join(self.hf_dir, self.files[name])
    if path not in self._open:
      if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: shard named by the index (for {name}) does not exist")
      self._open[path] = safe_open(path, framework="numpy")
    return self._open[path].get_tensor(name)
