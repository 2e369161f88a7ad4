"""Per-sample examples, the over-long policy, and packing of samples into rows of seq_len.

A sample of n tokens becomes n positions of one segment: inputs = ids, targets = ids shifted left by
one, loss_mask = the weight of each target; the last position of a sample has loss_mask 0 (its
target would belong to the next sample). Grain's FirstFitPackIterDataset places samples into
rows, numbering segments 1..k per row with positions restarting at 0 (0 = padding, loss_mask 0).

Counters travel with the data so they survive worker processes: every example carries a `stats`
vector (one sample count per source, then the STAT_NAMES events); dropped samples are removed by
DropAndCount, which adds their counts to the next kept example; packed rows sum their samples'.
"""

from __future__ import annotations

from typing import Any

import grain
import numpy as np

STAT_NAMES = ("truncated", "dropped_overlong", "skipped_corrupt", "dropped_empty")
OVERLONG_POLICIES = ("drop", "truncate")
FEATURES = ("inputs", "targets", "loss_mask")


def stats_vector(num_sources: int, source: int | None = None, event: str | None = None) -> np.ndarray:
  stats = np.zeros(num_sources + len(STAT_NAMES), np.int64)
  if source is not None:
    stats[source] = 1
  if event is not None:
    stats[num_sources + STAT_NAMES.index(event)] += 1
  return stats


def to_example(ids: np.ndarray, weights: np.ndarray, *, seq_len: int, overlong: str,
               source: int, num_sources: int) -> dict[str, np.ndarray]:
  """One sample's inputs/targets/loss_mask, or a drop marker (no "inputs") that only counts."""
  event = None
  if len(ids) == 0:  # would take a segment id without a position
    return {"stats": stats_vector(num_sources, event="dropped_empty")}
  if len(ids) > seq_len:
    if overlong == "drop":
      return {"stats": stats_vector(num_sources, event="dropped_overlong")}
    if overlong != "truncate":
      raise ValueError(f"config.data.overlong={overlong!r} is not one of {OVERLONG_POLICIES}")
    ids, weights, event = ids[:seq_len], weights[:seq_len], "truncated"
  targets = np.zeros_like(ids)
  targets[:-1] = ids[1:]
  loss_mask = np.zeros(len(ids), np.float32)
  loss_mask[:-1] = weights[1:]
  return {"inputs": ids.astype(np.int32), "targets": targets.astype(np.int32),
          "loss_mask": loss_mask, "stats": stats_vector(num_sources, source, event)}


class _DropAndCountIterator(grain.DatasetIterator):
  """Holds one kept example back so that drops after the last one (finite data) are still counted.

  State: the parent state and pending counts from before the held-back example was pulled.
  """

  def __init__(self, parent: grain.DatasetIterator):
    super().__init__(parent)
    self._pending: np.ndarray | None = None
    self._held: dict | None = None
    self._anchor = (self._parent.get_state(), None)

  def _pull(self) -> dict | None:
    """The next kept example, carrying the counts of drops before it; None at the end."""
    while True:
      try:
        element = next(self._parent)
      except StopIteration:
        return None
      stats = element["stats"] if self._pending is None else element["stats"] + self._pending
      if "inputs" in element:
        self._pending = None
        return {**element, "stats": stats}
      self._pending = stats

  def __next__(self) -> dict[str, np.ndarray]:
    if self._held is None:
      self._anchor = (self._parent.get_state(), self._pending)
      self._held = self._pull()
      if self._held is None:
        raise StopIteration
    anchor = (self._parent.get_state(), self._pending)
    following = self._pull()
    out = self._held
    if following is None and self._pending is not None:  # trailing drops of a finite stream
      out = {**out, "stats": out["stats"] + self._pending}
      self._pending = None
    self._held, self._anchor = following, anchor
    return out

  def get_state(self) -> dict[str, Any]:
    if self._held is None:
      self._anchor = (self._parent.get_state(), self._pending)
    parent, pending = self._anchor
    return {"parent": parent, "pending": None if pending is None else [int(x) for x in pending]}

  def set_state(self, state: dict[str, Any]) -> None:
    self._parent.set_state(state["parent"])
    pending = state["pending"]
    self._pending = None if pending is None else np.asarray(pending, np.int64)
    self._held = None
    self._anchor = (state["parent"], self._pending)


class DropAndCount(grain.IterDataset):
  """Removes drop markers, carrying their counts into the next kept example's stats."""

  def __init__(self, parent: grain.IterDataset):
    super().__init__(parent)

  def __iter__(self) -> grain.DatasetIterator:
    return _DropAndCountIterator(self._parent.__iter__())


def _finish_row(row: dict[str, Any]) -> dict[str, np.ndarray]:
  return {
      "inputs": row["inputs"], "targets": row["targets"],
      "segment_ids": row["inputs_segment_ids"], "positions": row["inputs_positions"],
      "loss_mask": row["loss_mask"].astype(np.float32),
      "stats": np.sum(np.stack(list(row["stats"])), axis=0),
  }


def pack(ds: grain.IterDataset, *, seq_len: int, packing_bins: int,
         max_segments_per_row: int) -> grain.IterDataset:
  """Examples -> rows {inputs, targets, segment_ids, positions, loss_mask [seq_len], stats}."""
  packed = grain.experimental.FirstFitPackIterDataset(
      DropAndCount(ds), length_struct={k: seq_len for k in FEATURES},
      num_packing_bins=packing_bins, shuffle_bins=False, meta_features=("stats",),
      max_sequences_per_bin=max_segments_per_row)
  return packed.map(_finish_row)


def row_segments(segment_ids: np.ndarray) -> list[np.ndarray]:
  """Index arrays of each sample (segment 1, 2, ...) in one packed row."""
  return [np.flatnonzero(segment_ids == s) for s in range(1, int(segment_ids.max(initial=0)) + 1)]
