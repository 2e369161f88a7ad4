"""Fit a codebook: read embeddings, initialise, run the k-means steps, checkpoint, export.

  WORKDIR/checkpoints/<step>/state    the k-means state (kmeans.py), orbax, sharded as on the mesh
  WORKDIR/checkpoints/<step>/reader   JSON: step, pass, the data's fingerprint, the layout
  WORKDIR/metrics.jsonl (+ tensorboard/)   per log step and per pass (docs/codebook.md)
  WORKDIR/codebook.npy                the K x d float32 centroids, written at the end (process 0)

The reader has no position of its own (reader.py): the saved step fixes the next batch, so a
resumed run replays exactly the uninterrupted run's steps. A checkpoint written on another number
of devices is re-laid out (its padded rows dropped and re-padded) when restored.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import io
import json
import logging
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding, PartitionSpec as P

from mio_jax import storage
from mio_jax.codebook import kmeans
from mio_jax.codebook.reader import EmbeddingReader, list_files
from mio_jax.codebook.search import Layout
from mio_jax.config.codebook_job import ConfigError, check_codebook_config
from mio_jax.parallel import mesh as mesh_lib
from mio_jax.parallel.batch_split import batch_shard
from mio_jax.train.checkpoint import CheckpointError, all_processes_ok, make_manager
from mio_jax.train.metrics import MetricWriter

log = logging.getLogger("mio_jax.codebook")
ITEMS = ("state", "reader")


@dataclasses.dataclass
class FitResult:
  step: int
  passes: int
  resumed_from: int | None
  centroids: np.ndarray  # [K, d] float32
  last_pass: dict  # the last pass's metrics


def options_from(config, steps_per_pass: int) -> kmeans.Options:
  u = config.utilisation
  return kmeans.Options(update=config.algorithm, reseed=config.reseed, reseed_pool=config.reseed_pool,
                        utilisation=u.method, usage_decay=float(u.usage_decay),
                        min_usage=float(u.min_usage), steps_per_pass=steps_per_pass,
                        precision=config.matmul_precision)


def initial_centroids(config, reader: EmbeddingReader, shardings) -> jax.Array:
  """K centroids from the first ceil(init_points / global_batch) batches of pass 0."""
  batches = -(-config.init_points // config.global_batch)
  xs, ws = zip(*(reader.global_batch_at(s, *shardings) for s in range(batches)))
  x, w = jnp.concatenate(xs), jnp.concatenate(ws)
  key = jax.random.key(config.seed)
  if int(jnp.sum(w > 0)) < config.num_clusters:
    raise ConfigError(f"config.init_points: the first {batches} batches hold {int(jnp.sum(w > 0))} "
                      f"points, fewer than config.num_clusters={config.num_clusters}")
  init = kmeans.init_kmeans_pp if config.init == "kmeans++" else kmeans.init_random
  return init(key, x, w, config.num_clusters)


def _reader_record(step: int, reader: EmbeddingReader, layout: Layout, config) -> dict:
  return dict(step=step, passes_done=step // reader.steps_per_pass, fingerprint=reader.fingerprint(),
              points=reader.points, num_clusters=layout.num_clusters, padded=layout.padded,
              dim=reader.dim, algorithm=config.algorithm)


def _restore(manager, step: int, mesh, layout: Layout, reader: EmbeddingReader, options) -> dict:
  record = manager.restore(step, args=ocp.args.Composite(reader=ocp.args.JsonRestore()))["reader"]
  where = f"{manager.directory / str(step)}"
  for key, want in (("fingerprint", reader.fingerprint()), ("num_clusters", layout.num_clusters),
                    ("dim", reader.dim), ("algorithm", options.update)):
    if record[key] != want:
      raise CheckpointError(f"{where}: saved {key}={record[key]!r}, this run has {want!r} (other data, "
                            "batch, streams, seed, shuffle or algorithm); use a new workdir")
  target = kmeans.abstract_state(mesh, layout, reader.dim, options)
  if record["padded"] != layout.padded:  # another device count: restore as saved, then re-pad
    fits = record["padded"] % mesh.size == 0
    target = {k: (jax.ShapeDtypeStruct((record["padded"],) + a.shape[1:], a.dtype,
                                       sharding=a.sharding if fits else NamedSharding(mesh, P()))
                  if a.sharding.spec and a.sharding.spec[0] else a) for k, a in target.items()}
  state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))["state"]
  if record["padded"] != layout.padded:
    state = _relayout(state, mesh, layout, reader.dim, options)
  return state


def _relayout(state: dict, mesh, layout: Layout, dim: int, options) -> dict:
  abstract = kmeans.abstract_state(mesh, layout, dim, options)
  k = layout.num_clusters

  def pad(name, a):
    if a.shape == abstract[name].shape:
      return a
    return jnp.pad(a[:k], ((0, layout.padded - k),) + ((0, 0),) * (a.ndim - 1))

  return jax.jit(lambda s: {n: pad(n, a) for n, a in s.items()},
                 out_shardings={n: a.sharding for n, a in abstract.items()})(state)


def restore_newest(manager, mesh, layout, reader, options) -> tuple[int, dict] | None:
  """(step, state) of the newest step that restores on every process; None without checkpoints."""
  steps = sorted(manager.all_steps(), reverse=True)
  failures = []
  for step in steps:
    try:
      state, ok = _restore(manager, step, mesh, layout, reader, options), True
    except CheckpointError:
      raise
    except Exception as e:  # noqa: BLE001 - an unreadable step falls back to the previous one
      failures.append(f"step {step}: {type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:300]}")
      log.warning("codebook checkpoint %s", failures[-1])
      state, ok = None, False
    if all_processes_ok(ok):
      return step, state
  if steps:
    raise CheckpointError(f"{manager.directory}: no checkpoint restores ({'; '.join(failures)})")
  return None


def _save(manager, step: int, state: dict, reader, layout, config) -> None:
  manager.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      reader=ocp.args.JsonSave(_reader_record(step, reader, layout, config))))


def _export(workdir, centroids: np.ndarray, record: dict) -> None:
  buf = io.BytesIO()
  np.save(buf, centroids)
  root = storage.as_path(workdir)
  storage.atomic_write_bytes(root / "codebook.npy", buf.getvalue())
  storage.atomic_write_text(root / "codebook.json", json.dumps(record, indent=1) + "\n")


def gather_centroids(state: dict, num_clusters: int) -> np.ndarray:
  c = state["centroids"]
  if not c.is_fully_addressable:
    from jax.experimental import multihost_utils
    c = multihost_utils.process_allgather(c, tiled=True)
  return np.asarray(c)[:num_clusters]


def fit(config, workdir: str, devices=None, stop_after: int | None = None) -> FitResult:
  """Run (or resume) the fit in `workdir`; `stop_after`: return after that many steps in total,
  checkpointed, as a preempted run would (the tests' interruption)."""
  check_codebook_config(config)
  mesh_lib.maybe_initialize_distributed()
  mesh = mesh_lib.make_mesh(config.mesh, devices)
  shardings = (NamedSharding(mesh, kmeans.POINTS_SPEC), NamedSharding(mesh, kmeans.WEIGHTS_SPEC))
  files = list_files(config.data.embeddings)
  rows = batch_shard(shardings[1], config.global_batch, ndim=1).rows
  reader = EmbeddingReader(files, global_batch=config.global_batch, streams=config.data.streams,
                           shuffle=config.data.shuffle, seed=config.seed, rows=rows)
  if config.num_clusters > reader.points:
    raise ConfigError(f"config.num_clusters={config.num_clusters} is more than the {reader.points} points")
  layout = Layout.of(config.num_clusters, mesh.size, config.block_size)
  options = options_from(config, reader.steps_per_pass)
  manager = make_manager(workdir, keep=config.keep, async_save=config.async_checkpoint, item_names=ITEMS)
  restored = restore_newest(manager, mesh, layout, reader, options)
  if restored is None:
    start, resumed = 0, None
    state = kmeans.new_state(mesh, layout, initial_centroids(config, reader, shardings), options)
  else:
    start, state = restored
    resumed = start
  total = config.passes * reader.steps_per_pass
  end = total if stop_after is None else min(total, stop_after)
  log.info("codebook: K=%d (padded %d over %d devices, %d blocks of %d), d=%d, %d points, %d steps "
           "per pass, %s from step %d to %d", layout.num_clusters, layout.padded, mesh.size,
           layout.blocks, layout.block, reader.dim, reader.points, reader.steps_per_pass,
           config.algorithm, start, end)
  step_fn = kmeans.make_step(mesh, layout, options)
  end_pass = kmeans.make_end_pass(mesh, layout, options)
  writer = MetricWriter(workdir, enabled=jax.process_index() == 0, resume_step=resumed)
  last_pass: dict = {}
  saved = start if resumed is not None else None
  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    ahead = pool.submit(reader.local_rows, start) if start < end else None
    tick, tick_step = time.perf_counter(), start
    for step in range(start, end):
      local = ahead.result()
      if step + 1 < end:
        ahead = pool.submit(reader.local_rows, step + 1)  # read the next batch during this step
      state, metrics = step_fn(state, *reader.global_batch_at(step, *shardings, local=local))
      done = step + 1
      row = {}
      if done % config.log_every == 0 or done == total:
        m = jax.device_get(metrics)
        now = time.perf_counter()
        row.update(inertia=float(m["batch_sq"] / max(m["batch_points"], 1.0)),
                   points_per_s=(done - tick_step) * config.global_batch / max(now - tick, 1e-9))
        tick, tick_step = now, done
      if done % reader.steps_per_pass == 0:
        state, pm = end_pass(state)
        last_pass = {k: float(v) for k, v in jax.device_get(pm).items()}
        row.update({"pass": done // reader.steps_per_pass, **last_pass})
      if row:
        row["reseeded_total"] = int(jax.device_get(state["reseeded"]))
        writer.write(done, row)
        if done % reader.steps_per_pass == 0:
          log.info("step %d pass %d: %s", done, done // reader.steps_per_pass,
                   ", ".join(f"{k} {v:.4g}" for k, v in last_pass.items()))
      if config.checkpoint_every and done % config.checkpoint_every == 0 and done < end:
        _save(manager, done, state, reader, layout, config)
        saved = done
  if saved != end:
    _save(manager, end, state, reader, layout, config)
  manager.wait_until_finished()
  writer.close()
  centroids = gather_centroids(state, layout.num_clusters)
  if end == total and jax.process_index() == 0:
    _export(workdir, centroids, _reader_record(end, reader, layout, config))
  return FitResult(end, end // reader.steps_per_pass, resumed, centroids, last_pass)
