"""One process of tests/parallel/test_multiprocess_rows.py: mesh, this process's rows, one reduction.

argv[1]: JSON {"ici": {...}, "dcn": {...}, "processes_per_node": N, "global_batch": B} and, for
the grain pipeline instead of synthetic batches, "pipeline": {"data_dir": ..., "text_model": ...}.
Prints one line "RESULT <json>" (gloo also writes to stdout): the process's BatchShard, the mesh's
device grid as (process, local rank) pairs, and the sum mod 2**32 over rows r and columns c of
inputs[r, c] * (r + 1) * (c + 1), computed with the columns split over the tensor axis, so every
replica's copy of the rows takes part.
"""

import json
import os
import sys

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import NamedSharding, PartitionSpec as P

from mio_jax.parallel import mesh as mesh_lib
from mio_jax.parallel.batch_split import batch_shard
from mio_jax.parallel.rules import batch_spec
from mio_jax.train.synthetic_batches import SyntheticBatches

SEED, SEQ_LEN, VOCAB = 3, 16, 101


def weighted_sum(mesh, inputs):
  def f(x):
    x = jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P(("data", "fsdp"), "tensor")))
    rows = jnp.arange(1, x.shape[0] + 1, dtype=jnp.uint32)[:, None]
    cols = jnp.arange(1, x.shape[1] + 1, dtype=jnp.uint32)[None, :]
    return jnp.sum(x.astype(jnp.uint32) * rows * cols, dtype=jnp.uint32)  # wraps as the oracle does
  return int(jax.jit(f, out_shardings=NamedSharding(mesh, P()))(inputs))


def local_rank(device):
  """Position of `device` among its process's devices by id (ids differ per process)."""
  same = sorted(d.id for d in jax.devices() if d.process_index == device.process_index)
  return same.index(device.id)


def main():
  args = json.loads(sys.argv[1])
  mesh_lib.maybe_initialize_distributed(timeout_s=60)
  cfg = ml_collections.ConfigDict(dict(ici=args["ici"], dcn=args["dcn"],
                                       processes_per_node=args["processes_per_node"]))
  topology = mesh_lib.mesh_topology(cfg)
  mesh = mesh_lib.make_mesh(cfg, topology)
  sharding = NamedSharding(mesh, batch_spec())
  shard = batch_shard(sharding, args["global_batch"])
  if "pipeline" in args:
    sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/
    import synthetic_shards
    from mio_jax.data.train_iterator import make_train_iterator
    p = args["pipeline"]
    data_cfg = synthetic_shards.pipeline_config(p["data_dir"], p["text_model"], {"pairs": 1},
                                                worker_count=0, global_batch=args["global_batch"],
                                                seq_len=p["seq_len"])
    batches = make_train_iterator(data_cfg, batch_sharding=sharding, shard=shard)
  else:
    batches = SyntheticBatches(seed=SEED, global_batch=args["global_batch"], seq_len=SEQ_LEN,
                               vocab_size=VOCAB, batch_sharding=sharding, shard=shard)
  inputs = next(batches)["inputs"]
  print("RESULT", json.dumps(dict(
      process=jax.process_index(), unit=topology.unit, shape=dict(mesh.shape),
      shard=[shard.index, shard.count, shard.rows.start, shard.rows.stop],
      grid=[[d.process_index, local_rank(d)] for d in mesh.devices.flat],
      slice_index=sorted({str(getattr(d, "slice_index", None)) for d in jax.devices()}),
      weighted=weighted_sum(mesh, inputs))))


if __name__ == "__main__":
  main()
