"""Global batches for the train loop from row streams, and their checkpointable state.

A row stream is one grain pipeline (mio_jax/data/pipeline.py) that reads records
[stream::streams] of every source and packs a fixed block of batch rows. With
`config.data.streams = S > 0` the global batch is S blocks of global_batch / S rows, block s always
made by stream s, whichever process runs it: so the batches, and the losses, do not depend on how
many processes share the work, and a checkpoint's stream states can be handed to a job with another
process count (each process takes the streams of its rows). With `streams = 0` (the default) each
distinct block of rows under the batch sharding is one stream: the fewest pipelines, but the
batches then depend on the process layout, and a resume must keep it.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from mio_jax.data import packing
from mio_jax.config.training import check_data_keys
from mio_jax.data.pipeline import KEYS, build_dataset, source_names
from mio_jax.parallel.batch_split import BatchShard, batch_shard
from mio_jax.train.code_order import training_vocab

STATE_VERSION = 2


def row_streams(global_batch: int, streams: int, rows: BatchShard) -> list[BatchShard]:
  """The streams that make this process's rows, in row order; one line if they cannot."""
  if not streams:
    return [rows]
  if global_batch % streams:
    raise ValueError(f"config.data.streams={streams} does not divide config.data.global_batch="
                     f"{global_batch}")
  per = global_batch // streams
  start, stop = rows.rows.start, rows.rows.stop
  if start % per or stop % per:
    raise ValueError(f"config.data.streams={streams}: this process feeds rows {start}:{stop}, not "
                     f"whole blocks of {per} rows; choose streams so that each process's rows "
                     "are a multiple of global_batch / streams")
  return [BatchShard(s, streams, slice(s * per, (s + 1) * per)) for s in range(start // per, stop // per)]


class TrainIterator:
  """This process's rows of each global batch as sharded jax.Arrays; get_state/set_state (JSON)."""

  def __init__(self, config, *, batch_sharding: jax.sharding.NamedSharding,
               shard: BatchShard | None = None):
    check_data_keys(config)  # validate() checked them in training; a direct caller gets one line too
    self.data_cfg = config.data
    if not config.vocab.text_model:
      raise ValueError("config.vocab.text_model is not set: the shard pipeline needs a "
                       "SentencePiece model to tokenize text (e.g. data/vocab/mini.model)")
    self.vocab = training_vocab(config)  # code_order "from_init" resolved (mio_jax/train/code_order.py)
    self.source_names = source_names(self.data_cfg)
    self._sharding = batch_sharding
    self._shape = (int(self.data_cfg.global_batch), int(self.data_cfg.seq_len))
    shard = shard or batch_shard(batch_sharding, self._shape[0])
    self.streams = int(self.data_cfg.streams)
    self._its = {s.index: iter(build_dataset(self.data_cfg, self.vocab, shard=s))
                 for s in row_streams(self._shape[0], self.streams, shard)}
    width = len(self.source_names) + len(packing.STAT_NAMES)
    self._totals = {k: np.zeros(width, np.int64) for k in self._its}

  @property
  def portable_state(self) -> bool:
    """A state saved by another number of processes can be taken up (fixed streams)."""
    return self.streams > 0

  def __iter__(self):
    return self

  def next_local(self) -> dict[str, np.ndarray]:
    """This process's rows as numpy (stats counted, not returned)."""
    parts = []
    for k, it in self._its.items():
      batch = next(it)
      self._totals[k] += batch.pop("stats").sum(axis=0)
      parts.append(batch)
    return parts[0] if len(parts) == 1 else {k: np.concatenate([p[k] for p in parts]) for k in KEYS}

  def __next__(self) -> dict[str, jax.Array]:
    local = self.next_local()
    return {k: jax.make_array_from_process_local_data(self._sharding, local[k], self._shape)
            for k in KEYS}

  def stats(self) -> dict[str, int]:
    """This process's counters so far: samples per source, truncated, dropped, skipped."""
    names = [f"samples/{n}" for n in self.source_names] + list(packing.STAT_NAMES)
    return dict(zip(names, (int(x) for x in sum(self._totals.values()))))

  def get_state(self) -> dict[str, Any]:
    return {"version": STATE_VERSION, "streams": self.streams,
            "stream_states": {str(k): {"grain": it.get_state(), "stats": self._totals[k].tolist()}
                              for k, it in self._its.items()}}

  def set_state(self, state: dict[str, Any]) -> None:
    if state.get("version") != STATE_VERSION:
      raise ValueError(f"data iterator state version {state.get('version')}, expected {STATE_VERSION}")
    if state["streams"] != self.streams:
      raise ValueError(f"the checkpoint's data state has config.data.streams={state['streams']}, "
                       f"this run {self.streams}")
    for k, it in self._its.items():
      saved = state["stream_states"].get(str(k))
      if saved is None:
        raise ValueError(f"the checkpoint's data state has no state for row stream {k}")
      it.set_state(saved["grain"])
      self._totals[k] = np.asarray(saved["stats"], np.int64)

  @staticmethod
  def merge_states(states: list[dict[str, Any]]) -> dict[str, Any]:
    """One state holding every stream of several processes' states (for another process count)."""
    merged = dict(states[0], stream_states={})
    for state in states:
      merged["stream_states"].update(state["stream_states"])
    return merged

  def close(self) -> None:
    for it in self._its.values():
      close = getattr(it, "close", None)
      if close is not None:
        close()


def make_train_iterator(config, *, batch_sharding: jax.sharding.NamedSharding,
                        shard: BatchShard | None = None) -> TrainIterator:
  return TrainIterator(config, batch_sharding=batch_sharding, shard=shard)
