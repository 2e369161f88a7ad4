"""Run a Pallas attention kernel under the ambient mesh with `jax.shard_map`.

Mosaic and Triton custom calls are opaque to the SPMD partitioner, so under `jax.set_mesh(mesh)`
each kernel is wrapped to run per shard: batch split over ("data", "fsdp"), heads over "tensor". Attention is
independent per batch row and per head, so no collective is needed. With no mesh set the kernel
is called directly; a batch the batch axes do not divide is replicated instead of split.
"""

from __future__ import annotations

import math

import jax
from jax.sharding import PartitionSpec as P

BATCH_AXES = ("data", "fsdp")
HEAD_AXIS = "tensor"


def _ambient_mesh():
  try:
    mesh = jax.sharding.get_abstract_mesh()
  except AttributeError:  # very old jax: no ambient mesh API
    return None
  if mesh is None or mesh.empty:
    return None
  return mesh


def shard_over_mesh(fn):
  """fn(q, k, v, q_seg, kv_seg) -> out, made to run per shard under the ambient mesh."""

  def wrapped(q, k, v, q_seg, kv_seg):
    mesh = _ambient_mesh()
    if mesh is None:
      return fn(q, k, v, q_seg, kv_seg)
    sizes = dict(zip(mesh.axis_names, mesh.axis_sizes))
    batch = tuple(a for a in BATCH_AXES if a in sizes) or None
    if batch and q.shape[0] % math.prod(sizes[a] for a in batch):
      batch = None  # e.g. generating one sequence: every shard computes the whole (small) batch
    heads = HEAD_AXIS if HEAD_AXIS in sizes else None
    if heads and k.shape[2] % sizes[heads]:
      raise ValueError(f"attention: num_kv_heads={k.shape[2]} is not divisible by mesh axis "
                       f"'{heads}' ({sizes[heads]}); choose config.mesh so every shard keeps whole "
                       f"KV groups")
    qkv_spec = P(batch, None, heads, None)
    seg_spec = P(batch, None)
    return jax.shard_map(fn, mesh=mesh, in_specs=(qkv_spec, qkv_spec, qkv_spec, seg_spec, seg_spec),
                         out_specs=qkv_spec, check_vma=False)(q, k, v, q_seg, kv_seg)

  return wrapped
