"""Hugging Face safetensors checkpoints: a streaming, size-sharded writer and a lazy reader.

Layout (as `save_pretrained` writes it): one `model.safetensors`, or above `max_shard_bytes`
`model-00001-of-0000N.safetensors` ... plus `model.safetensors.index.json` mapping every tensor
name to its file. The writer holds at most one shard's tensors in memory.
"""

from __future__ import annotations

import json
import os

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from mio_jax import storage

SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"
DEFAULT_MAX_SHARD_BYTES = 5 * 2**30  # transformers' default max_shard_size ("5GB")


def is_model_file(name: str) -> bool:
  """A file of a safetensors checkpoint (single, shard or index), which a new export replaces."""
  return name in (SINGLE, INDEX) or (name.startswith("model-") and name.endswith(".safetensors"))


class ShardedWriter:
  def __init__(self, out_dir: str, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES):
    self.out_dir, self.max_shard_bytes = out_dir, max_shard_bytes
    self._pending: dict[str, np.ndarray] = {}
    self._pending_bytes = 0
    self._shards: list[list[str]] = []  # tensor names per written shard
    self._total = 0
    os.makedirs(out_dir, exist_ok=True)
    # A stale index or shard from an earlier export would shadow (or mix with) this one.
    for name in os.listdir(out_dir):
      if is_model_file(name):
        os.remove(os.path.join(out_dir, name))

  def add(self, name: str, tensor: np.ndarray) -> None:
    if name in self._pending or any(name in s for s in self._shards):
      raise ValueError(f"tensor {name} written twice")
    if self._pending and self._pending_bytes + tensor.nbytes > self.max_shard_bytes:
      self._flush()
    self._pending[name] = np.ascontiguousarray(tensor)
    self._pending_bytes += tensor.nbytes
    self._total += tensor.nbytes

  def _tmp(self, i: int) -> str:
    return os.path.join(self.out_dir, f".shard-{i:05d}.safetensors.tmp")

  def _flush(self) -> None:
    save_file(self._pending, self._tmp(len(self._shards)), metadata={"format": "pt"})
    self._shards.append(list(self._pending))
    self._pending, self._pending_bytes = {}, 0

  def close(self) -> list[str]:
    """Writes the last shard, names the files, writes the index if sharded; returns file names."""
    if self._pending or not self._shards:
      self._flush()
    n = len(self._shards)
    names = [SINGLE] if n == 1 else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
    for i, name in enumerate(names):
      storage.default_mode(self._tmp(i))  # safetensors writes 0600
      storage.commit(self._tmp(i), os.path.join(self.out_dir, name))
    if n > 1:
      weight_map = {t: names[i] for i, shard in enumerate(self._shards) for t in shard}
      storage.atomic_write_text(os.path.join(self.out_dir, INDEX), json.dumps(
          {"metadata": {"total_size": self._total}, "weight_map": weight_map}, indent=2))
    return names


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
