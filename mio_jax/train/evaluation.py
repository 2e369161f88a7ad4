"""Held-out evaluation inside the training loop (config.eval; docs/metrics.md).

At step 1, every `eval.every` steps and at the last step, the current parameters score the same
`eval.batches` held-out batches, and the loop writes into that step's metrics row:

    eval_loss               mean negative log-likelihood per loss token over all of them (nats)
    eval_loss_<modality>    the same over the text, image or speech target tokens (null: none)
    eval_pairing_margin_<kind>  image_text / speech_text: held-out caption or transcript loss after
                            another sample's media less the loss after its own (mio_jax/evaluate/
                            pairing.py's margin; > 0: the model reads its media)

The batches come from `eval.mixed_shards` (held-out token shards, templated and packed as in
training, mio_jax/data/pipeline.py build_heldout_dataset, one pipeline per row stream so that with
data.streams the batches do not depend on the process count) or, when the run trains on synthetic data
and no shards are given, from synthetic rows at steps training never reaches. The iterator is built
afresh from `eval.seed` at each evaluation, so every evaluation of every run and resume sees the same
batches. The eval step is its own program, jitted and compiled once at start with the train step's
parameter and batch shardings; every process runs it and feeds its own rows, and its per-row sums
come back replicated, so any process can read them (only process 0 writes them).
"""

from __future__ import annotations

import logging
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from mio_jax.data.pipeline import build_heldout_dataset, heldout_paths
from mio_jax.data.shards import ShardReader
from mio_jax.data.templates import DEFAULT_TEMPLATE_SET
from mio_jax.data.train_iterator import row_streams
from mio_jax.evaluate.pairing import MEDIA, mismatched_partners, paired_sequences
from mio_jax.parallel.batch_split import batch_shard
from mio_jax.train.code_order import training_vocab
from mio_jax.train.compile import abstract_batch
from mio_jax.train.step import BATCH_KEYS, modality_masks, token_losses
from mio_jax.train.synthetic_batches import SyntheticBatches
from mio_jax.vocab import Vocabulary

log = logging.getLogger("mio_jax.train")
# Synthetic held-out rows are those of steps from here on: no run trains that long.
HELDOUT_SYNTHETIC_STEP = 2**40


def make_eval_step(graphdef: nnx.GraphDef, modality_ranges: dict[str, tuple[int, int]]) -> Callable:
  """`eval_step(params, batch) -> {loss, tokens, loss_<m>, tokens_<m>}`, each per row [B]: summed
  negative log-likelihood and loss-token count (no z-loss), so that any set of rows can be pooled."""

  def eval_step(params, batch):
    _, nll = token_losses(nnx.merge(graphdef, params), batch)
    mask = batch["loss_mask"].astype(jnp.float32)
    rows = {"loss": jnp.sum(nll * mask, axis=1), "tokens": jnp.sum(mask, axis=1)}
    for name, m in modality_masks(batch["targets"], modality_ranges).items():
      rows[f"loss_{name}"] = jnp.sum(nll * mask * m, axis=1)
      rows[f"tokens_{name}"] = jnp.sum(mask * m, axis=1)
    return rows

  return eval_step


def compile_eval_step(eval_step: Callable, params, param_shardings, batch_sharding: NamedSharding,
                      config):
  """Compiled once for the run's batch shape; outputs replicated (every process can read them)."""
  replicated = NamedSharding(batch_sharding.mesh, P())
  jitted = jax.jit(eval_step, in_shardings=(param_shardings, batch_sharding), out_shardings=replicated)
  return jitted.lower(params, abstract_batch(config, batch_sharding)).compile()


def pooled_losses(rows: dict[str, np.ndarray], modalities) -> dict[str, float | None]:
  """eval_loss and eval_loss_<m> from per-row sums (all batches concatenated)."""
  out = {"eval_loss": float(rows["loss"].sum() / max(rows["tokens"].sum(), 1.0))}
  for name in modalities:
    tokens = rows[f"tokens_{name}"].sum()
    out[f"eval_loss_{name}"] = float(rows[f"loss_{name}"].sum() / tokens) if tokens else None
  return out


def pairing_rows(samples, vocab: Vocabulary, *, stage: int, seq_len: int,
                 template_set: str = DEFAULT_TEMPLATE_SET) -> dict[str, tuple[np.ndarray, int]]:
  """kind -> (rows of pairing.py's real then mismatched sequences as batch dicts of [2n, seq_len],
  n). A pair whose sequences do not fit seq_len is left out; a kind with fewer than 2 pairs too."""
  out = {}
  for kind in MEDIA:
    group = [s for s in samples if s.kind == kind]
    if len(group) < 2:
      continue
    try:
      partners = mismatched_partners(group)
    except ValueError as e:
      log.warning("eval pairing margin for %s left out: %s", kind, e)
      continue
    pairs = list(zip(*paired_sequences(group, partners, vocab, stage, template_set)))
    fitting = [p for p in pairs if max(len(p[0][0]), len(p[1][0])) - 1 <= seq_len]
    if len(fitting) < len(pairs):
      log.info("eval pairing margin for %s: %d of %d pairs are longer than data.seq_len=%d, left out",
               kind, len(pairs) - len(fitting), len(pairs), seq_len)
    pairs = fitting
    if len(pairs) < 2:
      continue
    sequences = [real for real, _ in pairs] + [swapped for _, swapped in pairs]
    rows = {k: np.zeros((len(sequences), seq_len), np.float32 if k == "loss_mask" else np.int32)
            for k in BATCH_KEYS}
    for r, (ids, weights) in enumerate(sequences):
      n = len(ids) - 1
      rows["inputs"][r, :n], rows["targets"][r, :n] = ids[:-1], ids[1:]
      rows["loss_mask"][r, :n], rows["segment_ids"][r, :n] = weights[1:], 1
      rows["positions"][r, :n] = np.arange(n)
    out[kind] = (rows, len(pairs))
  return out


def read_pairing_samples(paths: list[str], per_kind: int) -> list:
  """The first `per_kind` image_text and speech_text samples of the shards, in shard order."""
  found = {kind: [] for kind in MEDIA}
  for path in paths:
    reader = ShardReader(path)
    try:
      for i in range(len(reader)):
        sample = reader[i]
        if sample.kind in found and len(found[sample.kind]) < per_kind:
          found[sample.kind].append(sample)
        if all(len(v) >= per_kind for v in found.values()):
          return [s for v in found.values() for s in v]
    finally:
      reader.close()
  return [s for v in found.values() for s in v]


class Evaluator:
  """The run's held-out evaluation: `due(step)`, then `evaluate(params)` -> the row's scalars."""

  def __init__(self, config, graphdef: nnx.GraphDef, params, param_shardings,
               batch_sharding: NamedSharding):
    e, data = config.eval, config.data
    self.config, self.every, self.last = config, int(e.every), int(config.train.steps)
    self.sharding, self.shape = batch_sharding, (int(data.global_batch), int(data.seq_len))
    self.shard = batch_shard(batch_sharding, self.shape[0])
    self.vocab = training_vocab(config)
    self.modalities = tuple(self.vocab.modality_ranges())
    self.pattern = e.mixed_shards
    if self.every and not self.pattern and data.source != "synthetic":
      log.info("config.eval.every=%d but config.eval.mixed_shards is empty and the run trains on "
               "shards: no held-out evaluation (give it held-out shards)", self.every)
      self.every = 0
    self.compiled, self.pairs, self._counts = None, {}, {}
    if not self.every:
      return
    step = make_eval_step(graphdef, self.vocab.modality_ranges())
    self.compiled = compile_eval_step(step, params, param_shardings, batch_sharding, config)
    if self.pattern and e.pairing_samples:
      samples = read_pairing_samples(heldout_paths(data, self.pattern), int(e.pairing_samples))
      self.pairs = pairing_rows(samples, self.vocab, stage=min(int(data.template_stage), 3),
                                seq_len=self.shape[1], template_set=data.template_set)

  def due(self, step: int) -> bool:
    return bool(self.every) and (step == 1 or step % self.every == 0 or step == self.last)

  def batches(self) -> Iterator[dict[str, jax.Array]]:
    """The held-out batches, the same ones at every call (a fresh iterator from the fixed seed)."""
    e, data = self.config.eval, self.config.data
    if self.pattern:
      # One pipeline per row stream, as in training: with data.streams set, the held-out batches
      # do not depend on the number of processes either.
      streams = [iter(build_heldout_dataset(data, self.vocab, self.pattern, seed=int(e.seed),
                                            shard=s, counts=self._counts))
                 for s in row_streams(self.shape[0], int(data.streams), self.shard)]
      for _ in range(int(e.batches)):
        parts = [next(it) for it in streams]
        yield {k: jax.make_array_from_process_local_data(
                   self.sharding, np.concatenate([p[k] for p in parts]), self.shape)
               for k in BATCH_KEYS}
    else:
      synthetic = SyntheticBatches(seed=int(e.seed), global_batch=self.shape[0], seq_len=self.shape[1],
                                   vocab_size=int(self.config.model.vocab_size),
                                   batch_sharding=self.sharding, shard=self.shard)
      synthetic.set_state({"step": HELDOUT_SYNTHETIC_STEP})
      for _ in range(int(e.batches)):
        yield next(synthetic)

  def _run(self, params, batches) -> dict[str, np.ndarray]:
    outputs = jax.device_get([self.compiled(params, b) for b in batches])
    return {k: np.concatenate([o[k] for o in outputs]).astype(np.float64) for k in outputs[0]}

  def evaluate(self, params) -> dict[str, float | None]:
    scalars = pooled_losses(self._run(params, self.batches()), self.modalities)
    for kind, (rows, n) in self.pairs.items():
      per_row = self._run(params, self._pairing_batches(rows))
      means = per_row["loss"][:2 * n] / np.maximum(per_row["tokens"][:2 * n], 1.0)
      scalars[f"eval_pairing_margin_{kind}"] = float(means[n:].mean() - means[:n].mean())
    return scalars

  def _pairing_batches(self, rows: dict[str, np.ndarray]) -> Iterator[dict[str, jax.Array]]:
    """The pairing rows in global batches (the last one padded with empty rows), this process's
    rows of each placed on its devices."""
    batch = self.shape[0]
    total = -(-len(rows["inputs"]) // batch) * batch
    padded = {k: np.concatenate([v, np.zeros((total - len(v), v.shape[1]), v.dtype)])
              for k, v in rows.items()}
    mine = self.shard.rows
    for start in range(0, total, batch):
      yield {k: jax.make_array_from_process_local_data(
                 self.sharding, v[start + mine.start:start + mine.stop], self.shape)
             for k, v in padded.items()}
