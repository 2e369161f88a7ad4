"""The grain input pipeline: sources -> host split -> shuffle -> mix -> template -> pack -> batch.

Per source (a glob of shards): records [process_index::process_count] (disjoint and complete over
hosts), shuffled with a per-source seed (reshuffled each epoch), repeated forever. Sources are mixed
by weight (grain MapDataset.mix: exact proportions of samples), each sample is templated and
tokenized with a random stream keyed by its index (so the pipeline is deterministic for a seed),
in worker processes if configured, then packed and batched to this host's rows in this process. `make_train_iterator` turns the local rows into global
jax.Arrays and checkpoints grain's iterator state.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import grain
import jax
import numpy as np
from absl import flags

from mio_jax import storage
from mio_jax.data import packing, shards
from mio_jax.data.templates import TemplateOptions, build_tokens
from mio_jax.vocab import Vocabulary

STATE_VERSION = 1
KEYS = ("inputs", "targets", "segment_ids", "positions", "loss_mask")


@dataclasses.dataclass(frozen=True)
class Skipped:
  """A corrupt record skipped under on_corrupt="skip"; counted downstream."""
  where: str


class ShardSource:
  """Random access over the records of several shards, decoded to Samples (grain data source)."""

  def __init__(self, paths: list[str], *, on_corrupt: str = "error", kinds: tuple[str, ...] = ()):
    if on_corrupt not in ("error", "skip"):
      raise ValueError(f"config.data.on_corrupt={on_corrupt!r} is not one of ('error', 'skip')")
    self.paths, self.on_corrupt = list(paths), on_corrupt
    lengths = []
    for path in self.paths:
      reader = shards.open_reader(path)
      try:
        shards.check_shard_version(reader, path)  # another schema version fails here, on open
        lengths.append(reader.num_records())
      finally:
        reader.close()
    self._starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    self._records = grain.sources.ArrayRecordDataSource(self.paths)
    # Shards holding several kinds (one tokenization job over many manifests): index the records
    # of the wanted kinds with one scan at start. Undecodable records stay in, to fail or be counted.
    self._keep = None
    if kinds:
      self._keep = np.asarray([i for i in range(int(self._starts[-1]))
                               if self._kind(i) in (*kinds, None)], np.int64)

  def _kind(self, index: int) -> str | None:
    _, sample = self._read(index)
    return None if isinstance(sample, Skipped) else sample.kind

  def __len__(self) -> int:
    return int(self._starts[-1]) if self._keep is None else len(self._keep)

  def locate(self, index: int) -> tuple[str, int]:
    f = int(np.searchsorted(self._starts, index, side="right")) - 1
    return self.paths[f], int(index - self._starts[f])

  def __getitem__(self, index: int) -> tuple[str, shards.Sample | Skipped]:
    """(where: "PATH record I", the decoded sample or Skipped)."""
    return self._read(int(index) if self._keep is None else int(self._keep[index]))

  def _read(self, index: int) -> tuple[str, shards.Sample | Skipped]:
    path, local = self.locate(index)
    where = f"{path} record {local}"
    try:
      return where, shards.decode_sample(self._records[index], path=path, index=local)
    except shards.ShardFormatError as e:
      if self.on_corrupt == "skip":
        return where, Skipped(str(e))
      raise


def resolve_shards(data_cfg, name: str) -> list[str]:
  pattern = data_cfg.sources[name].shards
  full = pattern if os.path.isabs(pattern) or storage.is_remote(pattern) else os.path.join(
      data_cfg.data_dir, pattern)
  paths = storage.glob(full)  # local or gs:// (ArrayRecord reads gs:// itself)
  if not paths:
    raise FileNotFoundError(f"config.data.sources.{name}.shards={pattern!r}: no files match {full}")
  return paths


class _ToExample:
  """(source index, Sample) -> packing example; picklable for grain worker processes."""

  def __init__(self, vocab: Vocabulary, opts: TemplateOptions, seq_len: int, overlong: str,
               names: tuple[str, ...]):
    self.vocab, self.opts, self.seq_len, self.overlong, self.names = vocab, opts, seq_len, overlong, names

  def __call__(self, item, rng: np.random.Generator) -> dict[str, np.ndarray]:
    source, (where, sample) = item
    n = len(self.names)
    if isinstance(sample, Skipped):
      return {"stats": packing.stats_vector(n, event="skipped_corrupt")}
    try:
      ids, weights = build_tokens(sample, self.vocab, rng, self.opts, where)
    except ValueError as e:  # codes outside the vocabulary, malformed pairs: name the record
      if str(e).startswith(where):
        raise
      raise ValueError(f"{where}: {e}") from e
    return packing.to_example(ids, weights, seq_len=self.seq_len, overlong=self.overlong,
                              source=source, num_sources=n)


class _Tag:
  def __init__(self, source: int):
    self.source = source

  def __call__(self, sample):
    return (self.source, sample)


def template_options(data_cfg) -> TemplateOptions:
  return TemplateOptions(
      stage=int(data_cfg.template_stage), loss_mask=data_cfg.loss_mask,
      image_generation_prob=data_cfg.image_generation_prob,
      video_generation_prob=data_cfg.video_generation_prob,
      speech_generation_prob=data_cfg.speech_generation_prob,
      system_prompt=data_cfg.system_prompt, add_bos=data_cfg.add_bos, add_eos=data_cfg.add_eos)


def source_names(data_cfg) -> tuple[str, ...]:
  return tuple(name for name in sorted(data_cfg.sources) if data_cfg.sources[name].weight > 0)


def build_examples(data_cfg, vocab: Vocabulary, *, process_index: int = 0, process_count: int = 1,
                   num_epochs: int | None = None) -> grain.MapDataset:
  """The mixed, templated MapDataset of one host's per-sample examples (infinite by default;
  with num_epochs and one source, exactly that many passes over the host's records)."""
  names = source_names(data_cfg)
  if not names:
    raise ValueError("config.data.sources: no source has weight > 0")
  parts = []
  for k, name in enumerate(names):
    kinds = tuple(k for k in data_cfg.sources[name].get("kinds", "").split(",") if k)
    unknown = set(kinds) - set(shards.KINDS)
    if unknown:
      raise ValueError(f"config.data.sources.{name}.kinds: unknown kinds {sorted(unknown)}")
    source = ShardSource(resolve_shards(data_cfg, name), on_corrupt=data_cfg.on_corrupt,
                         kinds=kinds)
    ds = grain.MapDataset.source(source)[process_index::process_count]
    if len(ds) == 0:
      raise ValueError(f"config.data.sources.{name}: {len(source)} records, none for host "
                       f"{process_index} of {process_count}")
    parts.append(ds.shuffle(seed=data_cfg.seed + 1009 * (k + 1)).repeat(num_epochs).map(_Tag(k)))
  weights = [float(data_cfg.sources[n].weight) for n in names]
  mixed = grain.MapDataset.mix(parts, weights) if len(parts) > 1 else parts[0]
  fn = _ToExample(vocab, template_options(data_cfg), data_cfg.seq_len, data_cfg.overlong, names)
  return mixed.seed(data_cfg.seed).random_map(fn)


def local_rows(data_cfg, process_count: int) -> int:
  if data_cfg.global_batch % process_count:
    raise ValueError(f"config.data.global_batch={data_cfg.global_batch} is not divisible by "
                     f"{process_count} processes")
  return data_cfg.global_batch // process_count


def build_dataset(data_cfg, vocab: Vocabulary, *, process_index: int = 0,
                  process_count: int = 1) -> grain.IterDataset:
  """This host's batches: dicts of numpy [global_batch // process_count, seq_len] plus `stats`."""
  examples = build_examples(data_cfg, vocab, process_index=process_index,
                            process_count=process_count)
  ds = examples.to_iter_dataset(grain.ReadOptions(num_threads=int(data_cfg.read_threads),
                                                  prefetch_buffer_size=64))
  if data_cfg.worker_count > 0:
    # Workers template and tokenize, each a strided slice of the mixed stream; grain interleaves
    # their outputs back into stream order. Packing stays here, after them: packing inside each
    # worker would bias the mixture (a worker holding longer samples fills its rows with fewer)
    # and would make the batches depend on the worker count.
    # grain's worker processes read absl flags; scripts without absl.app must mark them parsed.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=int(data_cfg.worker_count),
        per_worker_buffer_size=int(data_cfg.worker_buffer_size)))
  ds = packing.pack(ds, seq_len=data_cfg.seq_len, packing_bins=data_cfg.packing_bins,
                    max_segments_per_row=data_cfg.max_segments_per_row)
  ds = ds.batch(local_rows(data_cfg, process_count), drop_remainder=True)
  return ds


def resolve_data_config(config):
  """config.data completed with data_config(stage, "full") values for the keys it lacks.

  A config built by data_config() is returned as it is; a minimal one (seq_len, global_batch,
  seed, ...) gets MIO's sources and weights for its stage, in-process workers (worker_count 0).
  """
  from mio_jax.data.config import data_config
  data = config.data
  stage = int(data.get("stage", config.get("stage", 1)))
  full = data_config(stage, "full")
  full.worker_count = 0
  for key, value in data.items():
    full[key] = value
  return full


class TrainIterator:
  """Global batches for the train loop; `get_state`/`set_state` for the checkpoint (JSON)."""

  def __init__(self, config, *, batch_sharding: jax.sharding.NamedSharding, process_index: int,
               process_count: int):
    self.data_cfg = resolve_data_config(config)
    if not config.vocab.get("text_model"):
      raise ValueError("config.vocab.text_model is not set: the shard pipeline needs a "
                       "SentencePiece model to tokenize text (e.g. data/vocab/mini.model)")
    self.vocab = Vocabulary.from_config(config.vocab)
    self.source_names = source_names(self.data_cfg)
    self._sharding = batch_sharding
    self._shape = (int(self.data_cfg.global_batch), int(self.data_cfg.seq_len))
    ds = build_dataset(self.data_cfg, self.vocab, process_index=process_index,
                       process_count=process_count)
    self._it = iter(ds)
    self._totals = np.zeros(len(self.source_names) + len(packing.STAT_NAMES), np.int64)

  def __iter__(self):
    return self

  def next_local(self) -> dict[str, np.ndarray]:
    """This host's rows as numpy (stats counted, not returned)."""
    batch = next(self._it)
    self._totals += batch.pop("stats").sum(axis=0)
    return batch

  def __next__(self) -> dict[str, jax.Array]:
    local = self.next_local()
    return {k: jax.make_array_from_process_local_data(self._sharding, local[k], self._shape)
            for k in KEYS}

  def stats(self) -> dict[str, int]:
    """This host's counters so far: samples per source, truncated, dropped, skipped."""
    names = [f"samples/{n}" for n in self.source_names] + list(packing.STAT_NAMES)
    return dict(zip(names, (int(x) for x in self._totals)))

  def get_state(self) -> dict[str, Any]:
    return {"version": STATE_VERSION, "grain": self._it.get_state(),
            "stats": [int(x) for x in self._totals]}

  def set_state(self, state: dict[str, Any]) -> None:
    if state.get("version") != STATE_VERSION:
      raise ValueError(f"data iterator state version {state.get('version')}, expected {STATE_VERSION}")
    self._it.set_state(state["grain"])
    self._totals = np.asarray(state["stats"], np.int64)

  def close(self) -> None:
    close = getattr(self._it, "close", None)
    if close is not None:
      close()


def make_train_iterator(config, *, batch_sharding: jax.sharding.NamedSharding, process_index: int,
                        process_count: int) -> TrainIterator:
  return TrainIterator(config, batch_sharding=batch_sharding, process_index=process_index,
                       process_count=process_count)
