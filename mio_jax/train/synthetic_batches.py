"""A seeded synthetic batch source with the same contract as the shard pipeline.

Each row packs several samples; each sample is an arithmetic progression of token ids (random
start and stride), so a model can learn it and the loss visibly falls. Row r of step s depends only
on (seed, s, r): any process can make exactly its own rows (those its devices hold, per
mio_jax/parallel/batch_split.py), and resuming needs only the step number.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import NamedSharding

from mio_jax.parallel.batch_split import BatchShard, batch_shard


def synthetic_row(seed: int, step: int, row: int, seq_len: int, vocab_size: int) -> dict[str, np.ndarray]:
  rng = np.random.default_rng([seed, step, row])
  inputs = np.zeros(seq_len, np.int32)
  targets = np.zeros(seq_len, np.int32)
  segment_ids = np.zeros(seq_len, np.int32)
  positions = np.zeros(seq_len, np.int32)
  loss_mask = np.zeros(seq_len, np.float32)
  start, segment = 0, 1
  while seq_len - start >= 4:
    length = int(rng.integers(4, max(5, seq_len // 2)))
    length = min(length, seq_len - start)
    first, stride = int(rng.integers(0, vocab_size)), int(rng.integers(1, 4))
    tokens = (first + stride * np.arange(length + 1)) % vocab_size
    span = slice(start, start + length)
    inputs[span], targets[span] = tokens[:-1], tokens[1:]
    segment_ids[span], positions[span] = segment, np.arange(length)
    loss_mask[span] = 1.0
    loss_mask[start + length - 1] = 0.0  # no target across the sample boundary
    start, segment = start + length, segment + 1
  return dict(inputs=inputs, targets=targets, segment_ids=segment_ids, positions=positions,
              loss_mask=loss_mask)


class SyntheticBatches:
  """Iterator of global batches sharded by `batch_sharding`; each process builds only its rows.

  `shard` defaults to this process's rows under `batch_sharding`.
  """

  portable_state = True  # the step counter means the same to any number of processes

  def __init__(self, *, seed: int, global_batch: int, seq_len: int, vocab_size: int,
               batch_sharding: NamedSharding, shard: BatchShard | None = None):
    shard = shard or batch_shard(batch_sharding, global_batch)
    self.seed, self.seq_len, self.vocab_size = seed, seq_len, vocab_size
    self.global_shape = (global_batch, seq_len)
    self.sharding = batch_sharding
    self.rows = range(shard.rows.start, shard.rows.stop)
    self.step = 0

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, jax.Array]:
    rows = [synthetic_row(self.seed, self.step, r, self.seq_len, self.vocab_size) for r in self.rows]
    self.step += 1
    return {k: jax.make_array_from_process_local_data(self.sharding, np.stack([r[k] for r in rows]),
                                                      self.global_shape) for k in rows[0]}

  def get_state(self) -> dict:
    return {"step": self.step}

  def set_state(self, state: dict) -> None:
    self.step = int(state["step"])

  @staticmethod
  def merge_states(states: list[dict]) -> dict:
    return states[0]
