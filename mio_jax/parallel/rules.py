"""Logical axis names -> mesh axes: one small rule table decides every sharding.

Parameters carry logical axis names (`embed`, `mlp`, `heads`, ...) in their `logical_axes` metadata;
activations name theirs at `constrain(x, names)` calls. A rule table maps each logical name to mesh
axes; the first rule whose mesh axes are all still unused in that array wins, so one table serves
every mesh shape (an axis of size 1 shards nothing).
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator, Sequence

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")
Rules = tuple[tuple[str, str | tuple[str, ...] | None], ...]

# Activations: batch over data+fsdp; heads and MLP hidden over tensor (Megatron-style). The residual
# stream between blocks (what the scan saves per layer for the backward) is split on its length over
# tensor too (Megatron sequence parallelism): each block all-gathers it before its first matmul and
# reduce-scatters its output, the two halves of the all-reduce it would otherwise do, and the saved
# residuals take 1/tensor of the memory.
_ACTIVATION_RULES: Rules = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("residual_length", "tensor"),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_kv_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_vocab", "tensor"),
    # The whole visual codebook run through the tied head's projector: its rows split over fsdp.
    ("act_codebook", "fsdp"),
)

# ZeRO-3 style: every weight's embed dim split over fsdp, tensor-parallel dims over tensor.
_FSDP_PARAM_RULES: Rules = (
    ("layers", None),
    ("embed", "fsdp"),
    ("vocab", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("norm", None),
    # The visual codebook tables (UniCode², mio_jax/model/visual_cascade.py) split on their width,
    # not their rows: a token's row is then gathered where it lies, with no all-gathered batch.
    ("codebook", None),
    ("code_dim", "fsdp"),
)


def _replace(rules: Rules, **axes) -> Rules:
  return tuple((name, axes.get(name, mesh_axes)) for name, mesh_axes in rules)


RULE_SETS: dict[str, Rules] = {
    "fsdp": _ACTIVATION_RULES + _FSDP_PARAM_RULES,
    # Pure tensor parallelism: weights replicated over data/fsdp, split over tensor only.
    "tensor": _ACTIVATION_RULES + _replace(_FSDP_PARAM_RULES, embed=None, code_dim=None, codebook="tensor"),
    # Plain data parallelism: every weight replicated.
    "data": _ACTIVATION_RULES + tuple((name, None) for name, _ in _FSDP_PARAM_RULES),
}


def get_rules(name_or_rules: str | Sequence) -> Rules:
  if isinstance(name_or_rules, str):
    if name_or_rules not in RULE_SETS:
      raise ValueError(f"config.sharding.rules={name_or_rules!r} is not one of {sorted(RULE_SETS)}")
    return RULE_SETS[name_or_rules]
  return tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in name_or_rules)


def logical_to_spec(names: Sequence[str | None], rules: Rules) -> P:
  """PartitionSpec for an array whose dims have these logical names."""
  table = dict(rules)
  used: set[str] = set()
  spec = []
  for name in names:
    axes = table.get(name) if name is not None else None
    axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
    if any(a in used for a in axes):
      axes = ()
    used.update(axes)
    spec.append(None if not axes else axes[0] if len(axes) == 1 else axes)
  return P(*spec)


def named_sharding(mesh: Mesh, names: Sequence[str | None], rules: Rules,
                   shape: Sequence[int] | None = None) -> NamedSharding:
  """With `shape`, a dimension its mesh axes do not divide is replicated instead (MIO-7B's 4 KV
  heads on a tensor axis of 8: see kv_head_repeats)."""
  spec = logical_to_spec(names, rules)
  if shape is not None:
    sizes = dict(zip(mesh.axis_names, mesh.devices.shape))
    size = lambda axes: math.prod(sizes[a] for a in ((axes,) if isinstance(axes, str) else axes))
    spec = P(*(axes if axes is None or dim % size(axes) == 0 else None for axes, dim in zip(spec, shape)))
  return NamedSharding(mesh, spec)


# The mesh and rules that activation constraints use while a step is traced.
_ACTIVE: list[tuple[Mesh, Rules]] = []


@contextlib.contextmanager
def activation_sharding(mesh: Mesh, rules: Rules) -> Iterator[None]:
  """Within this context, `constrain` pins activations to the mesh; outside it, it does nothing."""
  _ACTIVE.append((mesh, rules))
  try:
    yield
  finally:
    _ACTIVE.pop()


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
  """x pinned to the active mesh by its dims' logical names; a dim its axes do not divide (one
  decoded token's length) stays whole."""
  if not _ACTIVE:
    return x
  mesh, rules = _ACTIVE[-1]
  return jax.lax.with_sharding_constraint(x, named_sharding(mesh, names, rules, x.shape))


def kv_head_repeats(num_kv_heads: int) -> int:
  """How many times each KV head is repeated so the active tensor axis splits whole heads: 1, or
  tensor / num_kv_heads when there are fewer KV heads than tensor shards (then each shard holds one
  copy, and the query heads it holds all read that KV head)."""
  if not _ACTIVE:
    return 1
  mesh = _ACTIVE[-1][0]
  tensor = dict(zip(mesh.axis_names, mesh.devices.shape)).get("tensor", 1)
  return tensor // num_kv_heads if tensor > num_kv_heads and tensor % num_kv_heads == 0 else 1


def batch_spec() -> P:
  """Batch arrays [batch, length]: rows over data and fsdp, the sequence whole."""
  return P(("data", "fsdp"), None)
