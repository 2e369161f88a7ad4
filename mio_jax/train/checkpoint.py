"""Orbax checkpoints: async saves, keep-N and milestones, resume that survives a damaged newest step.

Layout (docs/checkpoints.md):
  WORKDIR/checkpoints/<step>/params      model parameters, a nested dict (orbax PyTree)
  WORKDIR/checkpoints/<step>/opt_state   {step, opt_state}
  WORKDIR/checkpoints/<step>/data        process_<i>-of-<n>.json: each process's input iterator state
                                         (grain's checkpoint handler, as MaxText uses it)
Parameters are their own item so that the next stage (`init_from`) and the PyTorch export read
them without touching the optimizer state.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint import checkpoint_managers as policies

from mio_jax import storage
from mio_jax.train import table_init
from mio_jax.train.checkpoint_paths import checkpoint_dir, resolve_params_dir  # noqa: F401 (API)
from mio_jax.train.state import TrainState

log = logging.getLogger("mio_jax.train")


class CheckpointError(RuntimeError):
  """No checkpoint of a run can be restored, or its data state does not fit this job."""


def make_manager(workdir: str, *, keep: int, async_save: bool, keep_period: int = 0,
                 item_names: tuple[str, ...] = ("params", "opt_state", "data")) -> ocp.CheckpointManager:
  """keep-N newest steps, plus every `keep_period`-th step forever (0: none). `item_names`: the
  training run's by default; the codebook fit (mio_jax/codebook/fit.py) saves its own."""
  preserve = [policies.LatestN(n=keep)]
  if keep_period:
    preserve.append(policies.EveryNSteps(interval_steps=keep_period))
  options = ocp.CheckpointManagerOptions(
      enable_async_checkpointing=async_save, create=True,
      preservation_policy=policies.AnyPreservationPolicy(preserve))
  return ocp.CheckpointManager(storage.as_path(checkpoint_dir(workdir)), options=options,
                               item_names=item_names)


class _IteratorState:
  """Our batch iterators as grain's handler wants them: JSON bytes in, JSON bytes out.

  The state records the process count: every process reads its own slice of records, so a state
  means nothing to a job with a different number of processes (see `check_data_state`).
  """

  def __init__(self, iterator):
    self.iterator = iterator

  def get_state(self) -> bytes:
    state = {"process_count": jax.process_count(), "iterator": self.iterator.get_state()}
    return json.dumps(state).encode()

  def set_state(self, raw: bytes) -> None:
    self.iterator.set_state(json.loads(raw)["iterator"])

  def start_prefetch(self) -> None:  # grain's handler calls this after set_state
    pass


def save(manager: ocp.CheckpointManager, state: TrainState, batches) -> None:
  step = int(jax.device_get(state.step))
  manager.save(step, args=ocp.args.Composite(
      params=ocp.args.StandardSave(state.params),
      opt_state=ocp.args.StandardSave({"step": state.step, "opt_state": state.opt_state}),
      data=grain.checkpoint.CheckpointSave(_IteratorState(batches)),
  ))


def _abstract(tree: Any, shardings: Any) -> Any:
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def _saved_process_counts(data_dir: epath.Path) -> list[int]:
  return sorted({int(m.group(1)) for f in data_dir.glob("process_*-of-*.json")
                 if (m := re.search(r"-of-(\d+)\.json$", f.name))})


def check_data_state(step_dir: epath.Path, batches) -> None:
  """Refuse, in one line, a data state written by a different number of processes, unless the
  iterator can take it up (`portable_state`: the synthetic source, or fixed data.streams)."""
  data_dir = step_dir / "data"
  count = jax.process_count()
  saved = _saved_process_counts(data_dir)
  if not saved or count in saved or getattr(batches, "portable_state", False):
    return  # a missing file of this job's count fails the restore, which falls back a step
  raise CheckpointError(
      f"{step_dir} was written by {saved[0]} processes and this job has {count}: each process reads "
      f"its own records, so the data position cannot be carried over; resume with {saved[0]} "
      f"processes, or set config.data.streams before a run to make its data independent of the "
      f"process count, or start a new workdir with --config.init_from={step_dir} (parameters only)")


def _restore_step(manager, step, abstract_state, shardings, batches) -> TrainState:
  step_dir = manager.directory / str(step)
  data = step_dir / "data"
  if (data / f"process_{jax.process_index()}-of-{jax.process_count()}.json").exists():
    data_args = grain.checkpoint.CheckpointRestore(_IteratorState(batches))
  else:  # a portable state saved by another process count (check_data_state allowed it)
    data_args = None
    counts = _saved_process_counts(data)
    if not counts:
      raise FileNotFoundError(f"{data}: no data iterator state")
    states = [json.loads((data / f"process_{i}-of-{counts[0]}.json").read_text())["iterator"]
              for i in range(counts[0])]
    batches.set_state(batches.merge_states(states))
  items = dict(
      params=ocp.args.StandardRestore(_abstract(abstract_state.params, shardings.params)),
      opt_state=ocp.args.StandardRestore(_abstract(
          {"step": abstract_state.step, "opt_state": abstract_state.opt_state},
          {"step": shardings.step, "opt_state": shardings.opt_state})))
  if data_args is not None:
    items["data"] = data_args
  restored = manager.restore(step, args=ocp.args.Composite(**items))
  opt = restored["opt_state"]
  return TrainState(step=opt["step"], params=restored["params"], opt_state=opt["opt_state"])


def all_processes_ok(ok: bool) -> bool:
  """`ok` on every process (one agreement round when there are several)."""
  if jax.process_count() == 1:
    return ok
  from jax.experimental import multihost_utils
  import numpy as np
  return bool(np.all(multihost_utils.process_allgather(np.asarray(ok))))


def restore_newest(manager: ocp.CheckpointManager, abstract_state: TrainState, shardings: TrainState,
                   batches) -> TrainState | None:
  """The newest step that restores (train state returned, `batches` repositioned); None if the run
  has no checkpoint yet.

  A step that fails to restore (a missing or truncated array file, broken metadata, an item left
  out by a crash) is logged in one line and the next older one is tried; if none restores,
  CheckpointError. Unfinished temporary step directories are never listed by orbax.
  """
  steps = sorted(manager.all_steps(), reverse=True)
  if not steps:
    return None
  check_data_state(manager.directory / str(steps[0]), batches)
  failures = []
  for step in steps:
    try:
      state, ok = _restore_step(manager, step, abstract_state, shardings, batches), True
    except Exception as e:  # noqa: BLE001 - any unreadable step falls back to the previous one
      first_line = (str(e).strip().splitlines() or [""])[0][:300]
      failures.append(f"step {step}: {type(e).__name__}: {first_line}")
      log.warning("checkpoint step %d cannot be restored (%s: %s); trying an older one", step,
                  type(e).__name__, first_line)
      ok = False
    if all_processes_ok(ok):  # every process must resume from the same step
      if step != steps[0]:
        log.warning("resumed from step %d, the newest step that restores", step)
      return state
  raise CheckpointError(f"{manager.directory}: no checkpoint restores ({'; '.join(failures)}); "
                        "move the directory away to start from scratch")


def saved_param_shapes(params_dir: str | epath.Path) -> dict[str, tuple[int, ...]]:
  """Every saved parameter's shape by "/"-joined path, from orbax metadata (no array is read)."""
  with ocp.PyTreeCheckpointer() as checkpointer:
    meta = checkpointer.metadata(storage.as_path(params_dir))
  tree = getattr(meta, "item_metadata", meta)
  tree = getattr(tree, "tree", tree)
  flat = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: hasattr(x, "shape"))[0]
  return {_path_name(path): tuple(leaf.shape) for path, leaf in flat}


def _path_name(path) -> str:
  return "/".join(str(getattr(k, "key", k)) for k in path)


def load_params(path: str, abstract_params: Any, shardings: Any, model_cfg=None) -> Any:
  """Parameters only, from another run's checkpoint, in this run's sharded layout.

  A checkpoint whose parameter names or shapes differ raises, naming the first mismatch. With the
  run's `model_cfg`, a `table` checkpoint (MIO's layout, an import) can start a run whose image ids
  use the visual codebook: mio_jax/train/table_init.py (`abstract_params` then holds the run's fresh
  params, whose visual ones are kept).
  """
  params_dir = resolve_params_dir(path)
  saved = saved_param_shapes(params_dir)
  cuts = table_init.image_cuts(saved, abstract_params, model_cfg)  # None: the checkpoint is this model's
  read, read_sh = (abstract_params, shardings) if cuts is None else (
      table_init.without_visual(abstract_params), table_init.without_visual(shardings))
  shapes = {}
  for key, leaf in jax.tree_util.tree_flatten_with_path(read)[0]:
    name = _path_name(key)
    if name not in saved:
      raise ValueError(f"{params_dir}: parameter {name} is missing from the checkpoint")
    want = tuple(leaf.shape)
    if cuts and name in cuts:
      want = table_init.table_shape(want, cuts[name], model_cfg.image_codes)
      if saved[name] != want:
        raise ValueError(f"{params_dir}: parameter {name} has shape {saved[name]}; a table model of this "
                         f"run's vocabulary has {want} (this run drops the {model_cfg.image_codes} image ids')")
    elif saved[name] != want:
      raise ValueError(f"{params_dir}: parameter {name} has shape {saved[name]}, the model expects {want}")
    shapes[name] = want
  if cuts is not None and (extra := sorted(set(saved) - set(shapes))):
    raise ValueError(f"{params_dir}: parameter {extra[0]} is in the checkpoint but not in this model")
  abstract = jax.tree_util.tree_map_with_path(
      lambda key, leaf, sh: jax.ShapeDtypeStruct(shapes[_path_name(key)], leaf.dtype, sharding=sh),
      read, read_sh)
  with ocp.StandardCheckpointer() as checkpointer:
    loaded = checkpointer.restore(params_dir, abstract)
  if cuts is None:
    return loaded
  return table_init.cut_image_ids(loaded, abstract_params, shardings, cuts, model_cfg, _path_name)
