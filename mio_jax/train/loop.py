"""The training loop: validate, build the mesh, init or resume, compile once, step, log, save.

    config --validate--> mesh --> sharded state (init | resume | init_from) --> compiled step (and
          eval step) --> for each batch: step, metrics every log_every, held-out evaluation every
          eval.every, checkpoint every checkpoint_every; timings in the rows (docs/metrics.md)
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Iterator

import jax
from jax.sharding import NamedSharding

from mio_jax import storage
from mio_jax.data.config import shards_if_mixed
from mio_jax.model.transformer import ModelConfig
from mio_jax.parallel import mesh as mesh_lib
from mio_jax.parallel.batch_split import batch_shard
from mio_jax.parallel.rules import activation_sharding, batch_spec, get_rules
from mio_jax.train import checkpoint as ckpt
from mio_jax.train import metrics as metrics_lib
from mio_jax.train import schedules
from mio_jax.train.code_order import training_vocab, with_concrete_code_order
from mio_jax.train.compile import attention_kernel_for, compile_step, train_step_fn
from mio_jax.train.divergence import NonFiniteGuard
from mio_jax.train.eval_samples import EvalSamples
from mio_jax.train.evaluation import Evaluator
from mio_jax.train.preemption import PreemptionWatcher
from mio_jax.train.profiling import ProfileWindow
from mio_jax.train.run_config import resolve_init_from, save_run_config
from mio_jax.train.schedules import run_schedule
from mio_jax.train.state import create_train_state, make_optimizer
from mio_jax.train.synthetic_batches import SyntheticBatches
from mio_jax.train.validate import check_same_config_everywhere, validate

log = logging.getLogger("mio_jax.train")


@dataclasses.dataclass
class TrainResult:
  final_step: int
  losses: dict[int, float]  # step -> loss, for every step run in this call
  workdir: str
  preempted: bool = False  # stopped at a preemption notice, after saving final_step


def make_batches(config, batch_sharding: NamedSharding) -> Iterator[dict[str, jax.Array]]:
  # Rows per data-parallel replica: processes that share rows (tensor across hosts) feed the same.
  kwargs = dict(batch_sharding=batch_sharding,
                shard=batch_shard(batch_sharding, config.data.global_batch))
  if config.data.source == "synthetic":
    return SyntheticBatches(seed=config.data.seed, global_batch=config.data.global_batch,
                            seq_len=config.data.seq_len, vocab_size=config.model.vocab_size, **kwargs)
  from mio_jax.data.train_iterator import make_train_iterator
  return make_train_iterator(config, **kwargs)


def train(config, workdir: str, *, stop_at_step: int | None = None) -> TrainResult:
  """Train to config.train.steps, resuming from workdir's newest restorable checkpoint if any.

  `stop_at_step` ends this call early (after checkpointing), as a preemption would.
  Raises TrainingHalted on a non-finite loss (config.train.on_nonfinite) and CheckpointError when
  no checkpoint of the workdir restores.
  """
  run_start = time.perf_counter()
  mesh_lib.maybe_initialize_distributed()
  check_same_config_everywhere(config)
  validate(config, jax.devices())  # its keys, then its values; slices/nodes as make_mesh counts them
  config = with_concrete_code_order(config)  # "from_init": the init checkpoint's layout, logged
  shards_if_mixed(config)  # data.mixed_shards=GLOB means training on those shards
  storage.check_reachable(workdir, "workdir")  # an unreachable bucket: one line, before any work
  if jax.process_index() == 0:
    save_run_config(workdir, config)  # lets the export and the next stage rebuild the model
  mesh = mesh_lib.make_mesh(config.mesh)
  rules = get_rules(config.sharding.rules)
  model_cfg = ModelConfig.from_config(config.model, training_vocab(config))
  tc = config.train
  manager = ckpt.make_manager(workdir, keep=tc.keep_checkpoints, keep_period=tc.keep_period,
                              async_save=tc.async_checkpointing)
  # A resumed run keeps the schedule it started with (mio_jax/train/schedules.py).
  spec = run_schedule(workdir, schedules.schedule_spec(config.optimizer, tc.steps),
                      resuming=bool(manager.all_steps()), write=jax.process_index() == 0)
  tx, schedule = make_optimizer(config.optimizer, tc.steps, spec)
  batch_sharding = NamedSharding(mesh, batch_spec())
  log.info("mesh %s; model %.1fM parameters", dict(mesh.shape), model_cfg.num_params() / 1e6)

  try:
    with jax.set_mesh(mesh), activation_sharding(mesh, rules):
      kernel = attention_kernel_for(config, jax.default_backend())
      # A checkpoint holds the frozen visual codebook: a resumed run does not read its file too
      # (restore_newest restores a step or raises when the run has any).
      state, shardings, graphdef = create_train_state(model_cfg, tx, tc.seed, mesh, rules, kernel,
                                                      read_codebook=not manager.all_steps())
      batches = make_batches(config, batch_sharding)
      start = time.perf_counter()
      restored = ckpt.restore_newest(manager, state, shardings, batches)
      if restored is not None:
        state = restored
        log.info("resumed from %s at step %d", manager.directory, int(jax.device_get(state.step)))
      elif init_from := resolve_init_from(config):
        params = ckpt.load_params(init_from, state.params, shardings.params, model_cfg)
        state = dataclasses.replace(state, params=params)
        log.info("initialised parameters from %s", init_from)
      startup = {"restore_seconds": time.perf_counter() - start}

      start = time.perf_counter()
      step_fn = train_step_fn(config, graphdef, tx, schedule)  # the step train_compile compiles
      compiled = compile_step(step_fn, state, shardings, batch_sharding, config)
      # The eval step (compiled once, with the train step's shardings) and its pairing rows.
      evaluator = Evaluator(config, graphdef, state.params, shardings.params, batch_sharding)
      samples = EvalSamples(config, graphdef) if evaluator.every else None  # eval.samples: TensorBoard
      startup["compile_seconds"] = time.perf_counter() - start
      log.info("restore %.1fs, compile %.1fs", startup["restore_seconds"], startup["compile_seconds"])
      last = min(tc.steps, stop_at_step or tc.steps)
      run = _Run(config, workdir, manager, model_cfg, int(jax.device_get(state.step)), evaluator,
                 metrics_lib.StepTimes(run_start), startup, samples)
      return run.run(compiled, state, batches, last)
  finally:
    manager.close()


class _Run:
  """The stepping part of a run: log every log_every, evaluate when due, save every
  checkpoint_every, time it all, watch for preemption and non-finite steps (docs/checkpoints.md,
  docs/metrics.md)."""

  def __init__(self, config, workdir, manager, model_cfg, first_step: int, evaluator: Evaluator,
               times: metrics_lib.StepTimes, startup: dict[str, float], samples: EvalSamples | None = None):
    tc = self.tc = config.train
    self.manager, self.evaluator, self.times, self.samples = manager, evaluator, times, samples
    self.writer = metrics_lib.MetricWriter(workdir, enabled=jax.process_index() == 0,
                                           resume_step=first_step)
    self.guard = NonFiniteGuard(tc.on_nonfinite, tc.max_consecutive_skips)
    self.throughput = metrics_lib.Throughput(
        config.data.global_batch * config.data.seq_len,
        metrics_lib.train_flops_per_token(model_cfg, config.data.seq_len),
        metrics_lib.num_devices_peak(tc.peak_tflops_per_device))
    self.profile = ProfileWindow(workdir, tc.profile_steps)
    self.workdir, self.pending, self.losses = workdir, [], {}
    self.once = dict(startup)  # compile and restore time: in the run's first row
    self.start = time.perf_counter()

  def run(self, compiled, state, batches, last: int) -> TrainResult:
    step, preempted = int(jax.device_get(state.step)), False
    self.throughput.read()  # windows start at the first step
    self.times.restart_window()
    try:
      with PreemptionWatcher() as watcher:
        while step < last:
          start = time.perf_counter()
          batch = next(batches)
          self.times.add("data_wait", time.perf_counter() - start)
          self.profile.before_step(step + 1)
          state, metrics = compiled(state, batch)
          step += 1
          self.profile.after_step(step, metrics)
          self.throughput.step()
          self.times.step()
          self.pending.append((step, metrics))
          preempted = watcher.reached(step)
          evaluation = self.evaluate(step, state)
          save = step % self.tc.checkpoint_every == 0 or step == last or preempted
          if save:  # no state is saved before every step in it was checked (flush)
            held = self.flush(step, evaluation, hold_last=True)
            start = time.perf_counter()
            ckpt.save(self.manager, state, batches)
            blocked = time.perf_counter() - start
            self.times.add("checkpoint", blocked)
            if held:
              self.writer.write(held[0], {**held[1], "checkpoint_seconds": blocked})
            self.writer.sync()  # on gs:// the rows reach the bucket with the checkpoint
          elif step % self.tc.log_every == 0 or evaluation:
            self.flush(step, evaluation)
          if preempted:
            self.manager.wait_until_finished()
            log.info("preempted: saved step %d to %s; rerun the same command to resume", step,
                     self.manager.directory)
            break
      start = time.perf_counter()
      self.manager.wait_until_finished()
      log.info("last checkpoint written %.1fs after the last step", time.perf_counter() - start)
    finally:
      self.profile.stop()
      self.writer.close()
    return TrainResult(final_step=step, losses=self.losses, workdir=self.workdir, preempted=preempted)

  def evaluate(self, step: int, state) -> dict[str, float | None]:
    if not self.evaluator.due(step):
      return {}
    jax.block_until_ready(state)  # the steps in flight are step time, not evaluation time
    start = time.perf_counter()
    scalars = self.evaluator.evaluate(state.params)
    seconds = time.perf_counter() - start
    self.times.add("eval", seconds)
    parts = [f"{k.removeprefix('eval_loss_').replace('eval_pairing_margin_', 'margin ')} {v:.3f}"
             for k, v in scalars.items() if k != "eval_loss" and v is not None]
    log.info("step %d eval loss %.4f (%s) %.1fs", step, scalars["eval_loss"], " ".join(parts), seconds)
    scalars["eval_seconds"] = seconds
    if self.samples is not None and self.samples.tasks:
      start = time.perf_counter()
      written = self.samples.write(self.writer, step, state.params)
      scalars["eval_samples_seconds"] = time.perf_counter() - start
      self.times.add("eval", scalars["eval_samples_seconds"])
      log.info("step %d: %d eval samples in TensorBoard %.1fs", step, written,
               scalars["eval_samples_seconds"])
    return scalars

  def flush(self, step: int, extra: dict | None = None, hold_last: bool = False):
    """Fetch the pending steps' metrics, check each is finite, write them; the last row gets the
    window's timings and `extra`. With hold_last, that row is checked but returned, not written
    (the caller adds the checkpoint's time to it)."""
    if not self.pending:
      return None
    rows, self.pending = jax.device_get(self.pending), []
    # After the fetch, which waits for the window's steps to finish on the device.
    tokens_per_s, mfu = self.throughput.read(self.times.excluded())
    timings = self.times.read()
    held = None
    for s, m in rows:
      scalars = {k: float(v) for k, v in m.items() if not k.startswith("tokens_") and k != "finite"}
      for name in [k[len("tokens_"):] for k in m if k.startswith("tokens_")]:
        if not m[f"tokens_{name}"]:  # absent from this batch: null, not a loss of 0 (or nan)
          scalars[f"loss_{name}"] = None
      finite = bool(m["finite"])
      scalars["skipped"] = 0.0 if finite or self.guard.policy == "halt" else 1.0
      scalars.update(tokens_per_second=tokens_per_s, mfu=mfu)
      if s == step:
        scalars.update(**timings, **self.once, **(extra or {}))
        self.once = {}
      self.losses[s] = scalars["loss"]
      try:
        self.guard.observe(s, finite, scalars["loss"], scalars["grad_norm"])
      except Exception:
        self.writer.write(s, scalars)  # the row that halts the run is written first
        raise
      if hold_last and s == step:
        held = (s, scalars)
      else:
        self.writer.write(s, scalars)
    _progress(step, self.tc.steps, scalars, tokens_per_s, mfu, time.perf_counter() - self.start)
    return held


def _progress(step, total, scalars, tokens_per_s, mfu, elapsed) -> None:
  modality = " ".join(f"{k[5:]} {v:.3f}" for k, v in scalars.items()
                      if k.startswith("loss_") and v is not None)
  mfu_text = f" mfu {mfu:.1%}" if mfu is not None else ""
  log.info("step %d/%d loss %.4f (%s) lr %.2e gnorm %.2f %.0f tok/s%s %.0fs", step, total,
           scalars["loss"], modality, scalars["learning_rate"], scalars["grad_norm"], tokens_per_s,
           mfu_text, elapsed)
