"""Train state (step, params, optimizer state), the optax optimizer, and their shardings.

Parameters are a plain nested dict of arrays (`nnx.to_pure_dict` of the model), so checkpoints and
the PyTorch export see simple names like `blocks/attn/wq`. The model's graph definition stays static
and re-joins the params inside the step with `nnx.merge`.

A frozen parameter (the visual codebook, mio_jax/model/visual_cascade.py) is a param like the others
(checkpointed once, sharded, restored, exported) but the optimizer never sees it: its state is
built over `split_frozen(params)[0]`, so it holds no moments of it, and the step differentiates and
updates only those parameters (mio_jax/train/step.py).
"""

from __future__ import annotations

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from mio_jax.model.attention import AttentionKernel
from mio_jax.model.transformer import ModelConfig, Transformer
from mio_jax.model.visual_cascade import split_frozen, with_codebook
from mio_jax.parallel.rules import Rules, named_sharding
from mio_jax.train.schedules import ScheduleSpec, build_schedule, schedule_spec


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any


def learning_rate_schedule(opt_cfg, total_steps: int) -> optax.Schedule:
  """config.optimizer.schedule over `total_steps` (mio_jax/train/schedules.py; MIO's: warmup + cosine)."""
  return build_schedule(schedule_spec(opt_cfg, total_steps))


def make_optimizer(opt_cfg, total_steps: int, spec: ScheduleSpec | None = None
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """AdamW on config.optimizer; the schedule is `spec` when given (a resumed run's saved one)."""
  schedule = build_schedule(spec or schedule_spec(opt_cfg, total_steps))
  tx = optax.chain(
      optax.clip_by_global_norm(opt_cfg.clip_norm),
      optax.adamw(schedule, b1=opt_cfg.b1, b2=opt_cfg.b2, eps=opt_cfg.eps,
                  weight_decay=opt_cfg.weight_decay, mask=_norm_free_mask),
  )
  return tx, schedule


def _norm_free_mask(params: dict) -> dict:
  """Weight decay on weight matrices only; RMSNorm scales are exempt, as in Llama training."""
  return {k: _norm_free_mask(v) if isinstance(v, dict) else k != "scale" for k, v in params.items()}


def model_graphdef_and_axes(model_cfg: ModelConfig, kernel: AttentionKernel | None = None
                            ) -> tuple[nnx.GraphDef, dict, dict]:
  """The model's static graph (tracing with `kernel`, see Transformer), abstract params, and each
  param's logical axis names (no FLOPs)."""
  abstract = nnx.eval_shape(lambda: Transformer(model_cfg, rngs=nnx.Rngs(0), kernel=kernel))
  graphdef, state = nnx.split(abstract)
  shapes = nnx.to_pure_dict(state)
  axes = {}
  for path, var in nnx.to_flat_state(state):
    names = tuple(var.get_metadata()["logical_axes"])
    if len(var.shape) == len(names) + 1:  # stacked by nnx.vmap over layers
      names = ("layers",) + names
    _set_path(axes, path, names)
  return graphdef, shapes, axes


def _set_path(tree: dict, path: tuple, value) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def init_params(model_cfg: ModelConfig, seed: int, *, read_codebook: bool = True) -> dict:
  """Fresh parameters; the frozen visual codebook read from config.model.image_codebook, or left
  zero with read_codebook=False (inside a jitted init, which create_train_state fills after)."""
  params = nnx.to_pure_dict(nnx.state(Transformer(model_cfg, rngs=nnx.Rngs(seed)), nnx.Param))
  return with_codebook(params, model_cfg) if read_codebook else params


def init_opt_state(tx: optax.GradientTransformation, params: dict):
  """The optimizer's state for `params`: over the trainable ones only (the frozen codebook has none)."""
  return tx.init(split_frozen(params)[0])


def state_shardings(mesh: Mesh, rules: Rules, param_axes: dict, tx: optax.GradientTransformation,
                    abstract_state: TrainState) -> TrainState:
  """Shardings for every leaf of the train state: params by their logical axes, optimizer moments
  like the params they track, scalars replicated."""
  is_names = lambda x: isinstance(x, tuple) and all(isinstance(n, str) for n in x)
  param_sh = jax.tree.map(lambda names, a: named_sharding(mesh, names, rules, a.shape), param_axes,
                          abstract_state.params, is_leaf=is_names)
  replicated = NamedSharding(mesh, P())
  opt_sh = optax.tree_map_params(
      tx, lambda _, sh: sh, abstract_state.opt_state, split_frozen(param_sh)[0],
      transform_non_params=lambda _: replicated, is_leaf=lambda x: isinstance(x, NamedSharding))
  return TrainState(step=replicated, params=param_sh, opt_state=opt_sh)


def abstract_train_state(model_cfg: ModelConfig, tx: optax.GradientTransformation, seed: int,
                         mesh: Mesh, rules: Rules, kernel: AttentionKernel | None = None
                         ) -> tuple[Callable[[], TrainState], TrainState, TrainState, nnx.GraphDef]:
  """(init function, its abstract sharded output, the shardings, the model graphdef); no FLOPs."""
  graphdef, _, axes = model_graphdef_and_axes(model_cfg, kernel)

  def init() -> TrainState:
    params = init_params(model_cfg, seed, read_codebook=False)  # no 2.3 GB constant in the program
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=init_opt_state(tx, params))

  abstract = jax.eval_shape(init)
  shardings = state_shardings(mesh, rules, axes, tx, abstract)
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract, shardings)
  return init, abstract, shardings, graphdef


def create_train_state(model_cfg: ModelConfig, tx: optax.GradientTransformation, seed: int,
                       mesh: Mesh, rules: Rules, kernel: AttentionKernel | None = None, *,
                       read_codebook: bool = True) -> tuple[TrainState, TrainState, nnx.GraphDef]:
  """Initialise the state directly in its sharded layout (no host ever holds the whole model).

  Returns (state, its shardings, the model graphdef). The frozen visual codebook is read from its
  file straight into its sharded layout, each process reading the rows its devices hold; with
  read_codebook=False it stays zero (a resumed run restores it from its checkpoint), and
  read_frozen_codebook fills it later if need be.
  """
  init, _, shardings, graphdef = abstract_train_state(model_cfg, tx, seed, mesh, rules, kernel)
  state = jax.jit(init, out_shardings=shardings)()
  if read_codebook:
    state = read_frozen_codebook(state, shardings, model_cfg)
  return state, shardings, graphdef


def read_frozen_codebook(state: TrainState, shardings: TrainState, model_cfg: ModelConfig) -> TrainState:
  """`state` with the frozen visual codebook read from config.model.image_codebook (a table model:
  unchanged)."""
  if model_cfg.image_embedding == "table":
    return state
  sharding = shardings.params["visual"]["frozen_codebook"]
  return state.replace(params=with_codebook(state.params, model_cfg, sharding))
