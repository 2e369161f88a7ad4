"""Which batch rows a process feeds: one block per data-parallel replica, not per process.

A process feeds the rows its devices hold under the batch sharding. When a model axis (tensor)
spans processes, those processes hold the same rows and must feed identical data; `BatchShard`
numbers the distinct row blocks so that such processes read the same records too.

jax.make_array_from_process_local_data (jax 0.10) takes exactly these rows: local data of
`rows.stop - rows.start` rows (the whole batch when every process holds every row) is placed by
the start of each device's rows, and replicas' copies are taken on trust, unchecked, so feeding
different data to two processes that share rows silently trains on inconsistent replicas.
"""

from __future__ import annotations

import dataclasses

import jax
from jax.sharding import Sharding


@dataclasses.dataclass(frozen=True)
class BatchShard:
  """This process's rows of the global batch: block `index` of `count` distinct blocks."""
  index: int
  count: int
  rows: slice

  @property
  def num_rows(self) -> int:
    return self.rows.stop - self.rows.start

  @classmethod
  def whole(cls, global_batch: int) -> "BatchShard":
    """One reader for the whole batch (a single process)."""
    return cls(0, 1, slice(0, global_batch))


def _process_rows(index_map, global_batch: int) -> dict[int, tuple[int, int]]:
  """process index -> [start, stop) of the rows its devices hold; one contiguous block each."""
  spans: dict[int, set[tuple[int, int]]] = {}
  for device, index in index_map.items():
    start, stop, _ = index[0].indices(global_batch)
    spans.setdefault(device.process_index, set()).add((start, stop))
  blocks = {}
  for process, parts in spans.items():
    parts = sorted(parts)
    if any(b[0] != a[1] for a, b in zip(parts, parts[1:])):
      raise ValueError(f"batch sharding: process {process} holds rows {parts}, not one contiguous "
                       "block; order the mesh so each process's devices hold adjacent batch rows")
    blocks[process] = (parts[0][0], parts[-1][1])
  return blocks


def batch_shard(batch_sharding: Sharding, global_batch: int, process_index: int | None = None, *,
                ndim: int = 2) -> BatchShard:
  """The rows `process_index` (default: this process) feeds under `batch_sharding` (batch = dim 0)."""
  process_index = jax.process_index() if process_index is None else process_index
  shape = (global_batch,) + (1,) * (ndim - 1)
  try:
    index_map = batch_sharding.devices_indices_map(shape)
  except ValueError as e:
    raise ValueError(f"config.data.global_batch={global_batch} does not split over the batch "
                     f"sharding: {str(e).splitlines()[0]}") from None
  blocks = _process_rows(index_map, global_batch)
  distinct = sorted(set(blocks.values()))
  for a, b in zip(distinct, distinct[1:]):
    if b[0] < a[1]:
      raise ValueError(f"batch sharding: row blocks {a} and {b} of different processes overlap "
                       "without being equal; processes must hold the same rows or disjoint rows")
  if process_index not in blocks:
    raise ValueError(f"batch sharding: process {process_index} holds no devices of the mesh")
  mine = blocks[process_index]
  return BatchShard(distinct.index(mine), len(distinct), slice(*mine))
