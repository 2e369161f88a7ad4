"""Orbax checkpoints: async saves, keep-N, resume with the data iterator, parameters-only init.

Layout (docs/checkpoints.md):
  WORKDIR/checkpoints/<step>/params      model parameters, a nested dict (orbax PyTree)
  WORKDIR/checkpoints/<step>/opt_state   {step, opt_state}
  WORKDIR/checkpoints/<step>/data        the input iterator's state (JSON)
Parameters are their own item so that the next stage (`init_from`) and the PyTorch export read
them without touching the optimizer state.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from mio_jax.train.state import TrainState


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), "checkpoints")


def make_manager(workdir: str, *, keep: int, async_save: bool) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save,
                                         create=True)
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options,
                               item_names=("params", "opt_state", "data"))


def save(manager: ocp.CheckpointManager, state: TrainState, data_state: dict) -> None:
  step = int(jax.device_get(state.step))
  manager.save(step, args=ocp.args.Composite(
      params=ocp.args.StandardSave(state.params),
      opt_state=ocp.args.StandardSave({"step": state.step, "opt_state": state.opt_state}),
      data=ocp.args.JsonSave(data_state),
  ))


def _abstract(tree: Any, shardings: Any) -> Any:
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def restore(manager: ocp.CheckpointManager, step: int, abstract_state: TrainState,
            shardings: TrainState) -> tuple[TrainState, dict]:
  """The train state, laid out by `shardings`, and the data iterator state saved at `step`."""
  restored = manager.restore(step, args=ocp.args.Composite(
      params=ocp.args.StandardRestore(_abstract(abstract_state.params, shardings.params)),
      opt_state=ocp.args.StandardRestore(_abstract(
          {"step": abstract_state.step, "opt_state": abstract_state.opt_state},
          {"step": shardings.step, "opt_state": shardings.opt_state})),
      data=ocp.args.JsonRestore(),
  ))
  opt = restored["opt_state"]
  return TrainState(step=opt["step"], params=restored["params"], opt_state=opt["opt_state"]), restored["data"]


def resolve_params_dir(path: str) -> str:
  """`init_from` may name a workdir (latest step), a checkpoints dir, a step dir, or its params dir."""
  path = os.path.abspath(path)
  if os.path.basename(path) == "params" and os.path.isdir(path):
    return path
  if os.path.isdir(os.path.join(path, "params")):
    return os.path.join(path, "params")
  for root in (os.path.join(path, "checkpoints"), path):
    if os.path.isdir(root):
      steps = [int(d) for d in os.listdir(root) if d.isdigit()]
      if steps:
        return os.path.join(root, str(max(steps)), "params")
  raise FileNotFoundError(f"config.init_from={path!r}: no checkpoint with a params item found there")


def saved_param_shapes(params_dir: str) -> dict[str, tuple[int, ...]]:
  """Every saved parameter's shape by "/"-joined path, from orbax metadata (no array is read)."""
  with ocp.PyTreeCheckpointer() as checkpointer:
    meta = checkpointer.metadata(params_dir)
  tree = getattr(meta, "item_metadata", meta)
  tree = getattr(tree, "tree", tree)
  flat = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: hasattr(x, "shape"))[0]
  return {_path_name(path): tuple(leaf.shape) for path, leaf in flat}


def _path_name(path) -> str:
  return "/".join(str(getattr(k, "key", k)) for k in path)


def load_params(path: str, abstract_params: Any, shardings: Any) -> Any:
  """Parameters only, from another run's checkpoint, in this run's sharded layout.

  A checkpoint whose parameter names or shapes differ raises, naming the first mismatch.
  """
  params_dir = resolve_params_dir(path)
  saved = saved_param_shapes(params_dir)
  for key, leaf in jax.tree_util.tree_flatten_with_path(abstract_params)[0]:
    name = _path_name(key)
    if name not in saved:
      raise ValueError(f"{params_dir}: parameter {name} is missing from the checkpoint")
    if saved[name] != tuple(leaf.shape):
      raise ValueError(f"{params_dir}: parameter {name} has shape {saved[name]}, the model expects "
                       f"{tuple(leaf.shape)}")
  with ocp.StandardCheckpointer() as checkpointer:
    return checkpointer.restore(params_dir, _abstract(abstract_params, shardings))
