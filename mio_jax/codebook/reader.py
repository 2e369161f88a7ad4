"""Embeddings [n_i, d] from a folder of .npy files, as global batches in a fixed, resumable order.

Why .npy: the embeddings are dense float rows, read whole or by row; .npy is memory-mapped on local
disk (a batch touches only its rows' pages), needs no index or codec, and numpy writes it. ArrayRecord
would add a record per row (or per block) and a decode for nothing.

The order, independent of the number of processes (as training's data.streams):
- file i (sorted names) belongs to stream i % S; each stream gives b = B / S rows of every global
  batch, rows [s b, (s + 1) b);
- a pass is one read of every point: pass e of stream s visits its files in a permutation seeded by
  (seed, e, s) and each file's rows in a permutation seeded by (seed, e, s, file) (shuffle=False:
  files and rows in order); a stream with fewer rows than the longest pads its last batches with
  rows of weight 0, so every pass has the same `steps_per_pass` and a pass is exactly the data;
- the rows of step t are a function of t alone: the reader keeps no position, the checkpoint's step is
  the position.

A process reads only the streams of the rows its devices hold (mio_jax/parallel/batch_split.py), so
processes that hold the same rows (a tensor axis across hosts) read the same files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import os

import jax
import numpy as np

from mio_jax import storage
from mio_jax.config.keys import ConfigError


@dataclasses.dataclass(frozen=True)
class EmbeddingFile:
  path: str
  rows: int
  dim: int


def _header(path: str) -> tuple[tuple[int, ...], np.dtype]:
  with storage.as_path(path).open("rb") as f:
    version = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = read(f)
  return shape, dtype


def list_files(embeddings: str) -> list[EmbeddingFile]:
  """The .npy files of a folder (or a glob), sorted by name, each 2-D float [rows, d] with one d."""
  pattern = embeddings if any(ch in embeddings for ch in "*?[") else os.path.join(embeddings, "*.npy")
  paths = storage.glob(pattern)
  if not paths:
    raise ConfigError(f"config.data.embeddings={embeddings!r}: no .npy files there")
  files = []
  for p in paths:
    shape, dtype = _header(p)
    if len(shape) != 2 or dtype.kind != "f":
      raise ConfigError(f"config.data.embeddings: {p} holds {dtype} {shape}, not float [rows, d]")
    files.append(EmbeddingFile(p, shape[0], shape[1]))
  dims = {f.dim for f in files}
  if len(dims) > 1:
    raise ConfigError(f"config.data.embeddings: files of different widths {sorted(dims)} "
                      f"(e.g. {files[0].path}: {files[0].dim})")
  return files


class EmbeddingReader:
  """Global batches of points [global_batch, d] and weights [global_batch] (0 on padding rows)."""

  def __init__(self, files: list[EmbeddingFile], *, global_batch: int, streams: int, shuffle: bool,
               seed: int, rows: slice | None = None):
    if streams < 1 or global_batch % streams:
      raise ConfigError(f"config.data.streams={streams} must divide config.global_batch={global_batch}")
    if streams > len(files):
      raise ConfigError(f"config.data.streams={streams} is more than the {len(files)} embedding files")
    self.files, self.global_batch, self.streams = files, global_batch, streams
    self.shuffle, self.seed = shuffle, seed
    self.dim = files[0].dim
    self.per_stream = global_batch // streams
    self.stream_files = [list(range(s, len(files), streams)) for s in range(streams)]
    self.stream_rows = [sum(files[i].rows for i in fs) for fs in self.stream_files]
    self.points = sum(self.stream_rows)
    self.steps_per_pass = max(math.ceil(n / self.per_stream) for n in self.stream_rows)
    rows = rows or slice(0, global_batch)
    if rows.start % self.per_stream or rows.stop % self.per_stream:
      blocks = global_batch // (rows.stop - rows.start)
      raise ConfigError(f"config.data.streams={streams} must be a multiple of the {blocks} row blocks "
                        "the processes feed (each process reads whole streams)")
    self.my_streams = range(rows.start // self.per_stream, rows.stop // self.per_stream)
    self._order: dict[int, tuple[int, list[int], np.ndarray]] = {}  # stream -> (pass, files, cum rows)
    self._arrays: dict[int, np.ndarray] = {}

  def fingerprint(self) -> str:
    """What fixes the order of the points: a checkpoint refuses to resume on other data."""
    key = [[os.path.basename(f.path), f.rows, f.dim] for f in self.files]
    key += [self.global_batch, self.streams, self.shuffle, self.seed]
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]

  def _file(self, i: int) -> np.ndarray:
    if i not in self._arrays:
      if len(self._arrays) >= 2 * len(self.my_streams):  # a file or two per stream stays open
        self._arrays.pop(next(iter(self._arrays)))
      path = self.files[i].path
      if storage.is_remote(path):
        self._arrays[i] = np.load(io.BytesIO(storage.as_path(path).read_bytes()))
      else:
        self._arrays[i] = np.load(path, mmap_mode="r")
    return self._arrays[i]

  def _row_order(self, stream: int, epoch: int, i: int) -> np.ndarray:
    n = self.files[i].rows
    if not self.shuffle:
      return np.arange(n)
    return np.random.default_rng([self.seed, epoch, stream, i]).permutation(n)

  def _pass_order(self, stream: int, epoch: int) -> tuple[list[int], np.ndarray]:
    cached = self._order.get(stream)
    if cached is None or cached[0] != epoch:
      files = list(self.stream_files[stream])
      if self.shuffle:
        files = [files[j] for j in np.random.default_rng([self.seed, epoch, stream]).permutation(len(files))]
      cum = np.cumsum([0] + [self.files[i].rows for i in files])
      self._order[stream] = cached = (epoch, files, cum)
    return cached[1], cached[2]

  def stream_rows_at(self, stream: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Stream `stream`'s b rows of global step `step`: (points [b, d] float32, weights [b])."""
    epoch, chunk = divmod(step, self.steps_per_pass)
    files, cum = self._pass_order(stream, epoch)
    lo, hi = chunk * self.per_stream, min((chunk + 1) * self.per_stream, int(cum[-1]))
    out = np.zeros((self.per_stream, self.dim), np.float32)
    weights = np.zeros((self.per_stream,), np.float32)
    pos = lo
    while pos < hi:
      k = int(np.searchsorted(cum, pos, side="right")) - 1
      take = min(hi, int(cum[k + 1])) - pos
      rows = self._row_order(stream, epoch, files[k])[pos - cum[k]: pos - cum[k] + take]
      order = np.argsort(rows, kind="stable")  # read in file order (mmap pages), place in pass order
      block = np.empty((take, self.dim), np.float32)
      block[order] = self._file(files[k])[rows[order]]
      out[pos - lo: pos - lo + take] = block
      weights[pos - lo: pos - lo + take] = 1.0
      pos += take
    return out, weights

  def local_rows(self, step: int) -> tuple[np.ndarray, np.ndarray]:
    """This process's rows of step `step`: its streams' blocks, in row order."""
    parts = [self.stream_rows_at(s, step) for s in self.my_streams]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

  def global_batch_at(self, step: int, points_sharding, weights_sharding,
                      local: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[jax.Array, jax.Array]:
    """The global arrays of step `step` (from `local`, this process's rows, when already read)."""
    x, w = local if local is not None else self.local_rows(step)
    return (jax.make_array_from_process_local_data(points_sharding, x, (self.global_batch, self.dim)),
            jax.make_array_from_process_local_data(weights_sharding, w, (self.global_batch,)))
