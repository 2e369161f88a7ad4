"""The grain input pipeline: sources -> row-block split -> shuffle -> mix -> template -> pack -> batch.

Per source (a glob of shards): records [shard.index::shard.count], one split per distinct block of
batch rows (mio_jax/parallel/batch_split.py: processes holding the same rows read the same records;
the splits are disjoint and complete), shuffled with a per-source seed (reshuffled each epoch),
repeated forever. Sources are mixed by weight (grain MapDataset.mix: exact proportions of samples),
each sample is templated and tokenized with a random stream keyed by its index (so the pipeline is
deterministic for a seed), in worker processes if configured, then packed and batched to this
process's rows (shard.rows) in this process. mio_jax/data/train_iterator.py runs one such pipeline
per row stream, turns the local rows into global jax.Arrays and checkpoints their state.
"""

from __future__ import annotations

import dataclasses
import logging

import grain
import numpy as np
from absl import flags

from mio_jax import storage
from mio_jax.data import kinds_index, packing, shards
from mio_jax.data.config import source_shards, under_data_dir
from mio_jax.data.templates import TemplateOptions, build_tokens
from mio_jax.parallel.batch_split import BatchShard
from mio_jax.vocab import Vocabulary

KEYS = ("inputs", "targets", "segment_ids", "positions", "loss_mask")
log = logging.getLogger("mio_jax.data")


@dataclasses.dataclass(frozen=True)
class Skipped:
  """A corrupt record skipped under on_corrupt="skip"; counted downstream."""
  where: str


@dataclasses.dataclass(frozen=True)
class _WholeShard:
  """A shard and its record count for ArrayRecordDataSource (its FileInstruction protocol), so it
  does not open every shard again to count records."""
  filename: str
  take: int
  skip: int = 0

  @property
  def examples_in_shard(self) -> int:
    return self.take


class ShardSource:
  """Random access over the records of several shards, decoded to Samples (grain data source).

  `kinds` keeps only records of those kinds (shards of one tokenization job over several
  manifests), found from each shard's kinds index (`SHARD.kinds`, mio_jax/data/kinds_index.py)
  without decoding a record; shards without one are scanned (every record decoded) and logged.
  """

  def __init__(self, paths: list[str], *, on_corrupt: str = "error", kinds: tuple[str, ...] = (),
               label: str = "shards", pattern: str = "", counts: dict[str, int] | None = None):
    """counts: record counts of shards already opened and checked (filled with the ones opened
    here): sources over the same mixed shards open each once."""
    if on_corrupt not in ("error", "skip"):
      raise ValueError(f"config.data.on_corrupt={on_corrupt!r} is not one of ('error', 'skip')")
    self.paths, self.on_corrupt = list(paths), on_corrupt
    counts = {} if counts is None else counts
    lengths, codes = [], []
    for path in self.paths:  # each shard opened once: its count, its header, its kinds index
      if path not in counts:
        reader = shards.open_reader(path)
        try:
          shards.check_shard_version(reader, path)  # another schema version fails here, on open
          counts[path] = reader.num_records()
        finally:
          reader.close()
      lengths.append(counts[path])
      if kinds:
        codes.append(kinds_index.read(path, lengths[-1]))
    self._starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    self._records = grain.sources.ArrayRecordDataSource(
        [_WholeShard(p, n) for p, n in zip(self.paths, lengths)])
    self._keep = None
    if kinds:
      missing = [f for f, c in enumerate(codes) if c is None]
      if missing:
        log.warning("%s: %d of %d shards predate the kinds index (no %s); decoding every record of "
                    "those to find its kind; write the index once with: python -m "
                    "mio_jax.data.kinds_index '%s'", label, len(missing), len(self.paths),
                    kinds_index.sidecar(self.paths[missing[0]]), pattern or self.paths[missing[0]])
      for f in missing:  # undecodable records stay in, to fail or be counted when read
        found = map(self._kind, range(self._starts[f], self._starts[f + 1]))
        codes[f] = np.asarray([kinds_index.UNDECODABLE if k is None else shards.KINDS.index(k)
                               for k in found], np.uint8)
      all_codes = np.concatenate(codes) if codes else np.zeros(0, np.uint8)
      self._keep = np.flatnonzero(np.isin(all_codes, kinds_index.codes_of(kinds))).astype(np.int64)

  def _kind(self, index: int) -> str | None:
    _, sample = self._read(int(index))
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


def _shard_files(data_cfg, pattern: str, key: str) -> list[str]:
  """The shard files `pattern` matches, sorted (kinds index files beside them are not shards);
  none is an error naming config `key`."""
  full = under_data_dir(data_cfg, pattern)
  # local or gs:// (ArrayRecord reads gs:// itself)
  paths = [p for p in storage.glob(full) if not p.endswith(kinds_index.SUFFIX)]
  if not paths:
    raise FileNotFoundError(f"config.{key}={pattern!r}: no files match {full}")
  return paths


def shards_glob(data_cfg, name: str) -> str:
  """Source `name`'s glob made absolute (relative ones are under data_cfg.data_dir)."""
  return under_data_dir(data_cfg, source_shards(data_cfg, name)[0])


def resolve_shards(data_cfg, name: str) -> list[str]:
  """Source `name`'s shard files, sorted (kinds index files beside them are not shards)."""
  key = "mixed_shards" if data_cfg.mixed_shards else f"sources.{name}.shards"
  return _shard_files(data_cfg, source_shards(data_cfg, name)[0], f"data.{key}")


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
      system_prompt=data_cfg.system_prompt, voice_system_prompt=data_cfg.voice_system_prompt,
      template_set=data_cfg.template_set, add_bos=data_cfg.add_bos, add_eos=data_cfg.add_eos)


def source_names(data_cfg) -> tuple[str, ...]:
  return tuple(name for name in sorted(data_cfg.sources) if data_cfg.sources[name].weight > 0)


def build_examples(data_cfg, vocab: Vocabulary, *, shard: BatchShard | None = None,
                   num_epochs: int | None = None) -> grain.MapDataset:
  """The mixed, templated MapDataset of one row block's per-sample examples (infinite by default;
  with num_epochs and one source, exactly that many passes over the block's records).

  `shard` (default: one reader for everything) picks records [shard.index::shard.count]."""
  shard = shard or BatchShard.whole(int(data_cfg.global_batch))
  names = source_names(data_cfg)
  if not names:
    raise ValueError("config.data.sources: no source has weight > 0")
  parts, counts = [], {}
  for k, name in enumerate(names):
    _, kinds = source_shards(data_cfg, name)
    source = ShardSource(resolve_shards(data_cfg, name), on_corrupt=data_cfg.on_corrupt,
                         kinds=kinds, label=f"config.data.sources.{name}",
                         pattern=shards_glob(data_cfg, name), counts=counts)
    ds = grain.MapDataset.source(source)[shard.index::shard.count]
    if len(ds) == 0:
      raise ValueError(f"config.data.sources.{name}: {len(source)} records, none for row block "
                       f"{shard.index} of {shard.count}")
    parts.append(ds.shuffle(seed=data_cfg.seed + 1009 * (k + 1)).repeat(num_epochs).map(_Tag(k)))
  weights = [float(data_cfg.sources[n].weight) for n in names]
  mixed = grain.MapDataset.mix(parts, weights) if len(parts) > 1 else parts[0]
  fn = _ToExample(vocab, template_options(data_cfg), data_cfg.seq_len, data_cfg.overlong, names)
  return mixed.seed(data_cfg.seed).random_map(fn)


def local_rows(data_cfg, shard: BatchShard | None) -> int:
  return (shard or BatchShard.whole(int(data_cfg.global_batch))).num_rows


def build_dataset(data_cfg, vocab: Vocabulary, *, shard: BatchShard | None = None) -> grain.IterDataset:
  """This process's batches: dicts of numpy [shard.num_rows, seq_len] plus `stats`."""
  examples = build_examples(data_cfg, vocab, shard=shard)
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
  ds = ds.batch(local_rows(data_cfg, shard), drop_remainder=True)
  return ds


def heldout_paths(data_cfg, pattern: str) -> list[str]:
  """The held-out shards of `pattern` (config.eval.mixed_shards; relative: under data.data_dir)."""
  return _shard_files(data_cfg, pattern, "eval.mixed_shards")


def build_heldout_dataset(data_cfg, vocab: Vocabulary, pattern: str, *, seed: int,
                          shard: BatchShard | None = None,
                          counts: dict[str, int] | None = None) -> grain.IterDataset:
  """Batches of the held-out shards `pattern` (config.eval.mixed_shards) for evaluation.

  Every record in shard order (no shuffle, no mixture: the held-out set is what it is), templated
  and packed as in training, repeated so that any number of batches can be drawn. Built afresh
  from the same `seed`, it yields the same batches every time. `counts`: as for ShardSource.
  """
  shard = shard or BatchShard.whole(int(data_cfg.global_batch))
  source = ShardSource(heldout_paths(data_cfg, pattern), on_corrupt=data_cfg.on_corrupt, label="config.eval.mixed_shards",
                       counts=counts)
  records = grain.MapDataset.source(source)[shard.index::shard.count]
  if len(records) == 0:
    raise ValueError(f"config.eval.mixed_shards={pattern!r}: {len(source)} records, none for row "
                     f"block {shard.index} of {shard.count}")
  fn = _ToExample(vocab, template_options(data_cfg), data_cfg.seq_len, data_cfg.overlong, ("heldout",))
  examples = records.repeat().map(_Tag(0)).seed(seed).random_map(fn)
  ds = examples.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=16))
  ds = packing.pack(ds, seq_len=data_cfg.seq_len, packing_bins=data_cfg.packing_bins,
                    max_segments_per_row=data_cfg.max_segments_per_row)
  return ds.batch(local_rows(data_cfg, shard), drop_remainder=True)
