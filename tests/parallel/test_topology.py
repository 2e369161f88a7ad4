"""Granules, device grids and batch rows on topologies this machine lacks, from fake device lists.

Expected grids are worked by hand: a Mesh axis index is dcn index * ici size + ici index; GPUs
inside a node go in id order; a TPU v4 2x2x2 slice lays an axis over physical (x, y, z), x major.
"""

import logging

import ml_collections
import numpy as np
import pytest
from fake_devices import cpu_devices, gpu_nodes, tpu_v4_slices
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from configs.base import stage_config
from mio_jax.parallel.batch_split import BatchShard, batch_shard
from mio_jax.parallel.mesh import MeshConfigError, make_mesh, mesh_topology
from mio_jax.parallel.rules import batch_spec
from mio_jax.train.validate import ConfigError, validate


def mesh_cfg(ici, dcn, processes_per_node=0):
  return ml_collections.ConfigDict(dict(ici=ici, dcn=dcn, processes_per_node=processes_per_node))


def ids(mesh):
  return np.vectorize(lambda d: d.id)(mesh.devices)


def shards(mesh, global_batch):
  """process -> BatchShard, for every process of the mesh."""
  sharding = NamedSharding(mesh, batch_spec())
  processes = sorted({d.process_index for d in mesh.devices.flat})
  return {p: batch_shard(sharding, global_batch, p) for p in processes}


@pytest.mark.parametrize("processes_per_node", [1, 8])
def test_gpu_two_nodes_fsdp_inside_node_data_across(processes_per_node):
  devices = gpu_nodes(2, 8, processes_per_node)
  topology = mesh_topology(mesh_cfg({}, {}), devices)
  assert (topology.unit, topology.num_granules, topology.devices_per_granule) == ("host", 2, 8)
  mesh = make_mesh(mesh_cfg(dict(fsdp=-1), dict(data=-1)), devices)
  assert dict(mesh.shape) == {"data": 2, "fsdp": 8, "tensor": 1}
  np.testing.assert_array_equal(ids(mesh)[..., 0], [list(range(8)), list(range(8, 16))])


def test_gpu_processes_per_node_override_when_runtime_has_no_slice_index(caplog):
  devices = gpu_nodes(2, 8, 8, with_slice_index=False)
  # Without help every 1-GPU process is its own granule: fsdp would be 1 (the 7B state replicated),
  # and a warning names the override.
  with caplog.at_level(logging.WARNING):
    assert dict(make_mesh(mesh_cfg(dict(fsdp=-1), dict(data=-1)), devices).shape)["fsdp"] == 1
  assert "config.mesh.processes_per_node" in caplog.text
  mesh = make_mesh(mesh_cfg(dict(fsdp=-1), dict(data=-1), processes_per_node=8), devices)
  assert dict(mesh.shape) == {"data": 2, "fsdp": 8, "tensor": 1}
  np.testing.assert_array_equal(ids(mesh)[..., 0], [list(range(8)), list(range(8, 16))])


def test_processes_not_in_node_blocks_are_refused_in_one_line():
  with pytest.raises(MeshConfigError, match=r"^devices: each node must hold the same number of "
                     r"devices, got \{0: 3, 1: 3, 2: 2\}"):
    mesh_topology(mesh_cfg({}, {}, processes_per_node=3), gpu_nodes(1, 8, 8, with_slice_index=False))


def test_gpu_tensor_across_nodes_pairs_processes_with_the_same_rows():
  # One process per GPU; tensor=2 over the two nodes, fsdp=8 inside: GPU g and GPU g+8 hold the
  # same batch rows, so process p and process p+8 feed the same rows and read the same records.
  mesh = make_mesh(mesh_cfg(dict(fsdp=8), dict(tensor=2)), gpu_nodes(2, 8, 8))
  assert dict(mesh.shape) == {"data": 1, "fsdp": 8, "tensor": 2}
  np.testing.assert_array_equal(ids(mesh)[0], [[f, f + 8] for f in range(8)])
  got = shards(mesh, global_batch=16)
  for p in range(16):
    f = p % 8
    assert got[p] == BatchShard(index=f, count=8, rows=slice(2 * f, 2 * f + 2))


def test_tpu_multislice_grid_and_rows():
  devices = tpu_v4_slices(2, hosts_per_slice=4)  # host h of slice s holds chips x=0,1 at one (y, z)
  topology = mesh_topology(mesh_cfg({}, {}), devices)
  assert (topology.unit, topology.num_granules, topology.devices_per_granule) == ("slice", 2, 8)
  mesh = make_mesh(mesh_cfg(dict(fsdp=4, tensor=2), dict(data=-1)), devices)
  assert dict(mesh.shape) == {"data": 2, "fsdp": 4, "tensor": 2}
  # tensor takes x; fsdp j takes (y, z) = (j // 2, j % 2); chip id = x + 2y + 4z (+8 per slice).
  slice0 = [[0, 1], [4, 5], [2, 3], [6, 7]]
  np.testing.assert_array_equal(ids(mesh), [slice0, np.add(slice0, 8)])
  got = shards(mesh, global_batch=16)  # 8 row blocks of 2; each host holds exactly one
  order = [0, 2, 1, 3]  # host c // 2 of each slice sits at fsdp position order[c // 2]
  for p in range(8):
    block = (p // 4) * 4 + order[p % 4]
    assert got[p] == BatchShard(index=block, count=8, rows=slice(2 * block, 2 * block + 2))


def test_tpu_one_process_per_chip_tensor_across_processes():
  mesh = make_mesh(mesh_cfg(dict(fsdp=4, tensor=2), dict(data=-1)), tpu_v4_slices(2, hosts_per_slice=8))
  got = shards(mesh, global_batch=8)
  assert got[0] == got[1] == BatchShard(0, 8, slice(0, 1))  # chips 0 and 1: the tensor pair
  assert got[4] == got[5] == BatchShard(1, 8, slice(1, 2))
  assert got[9] == BatchShard(4, 8, slice(4, 5))


def test_validate_uses_the_same_slices_as_make_mesh():
  c = stage_config(2, "smoke")
  devices = tpu_v4_slices(2, hosts_per_slice=4)
  c.mesh.ici.update(data=1, fsdp=4, tensor=2)
  c.mesh.dcn.update(data=-1)
  assert validate(c, devices) == {"data": 2, "fsdp": 4, "tensor": 2}
  assert dict(make_mesh(c.mesh, devices).shape) == {"data": 2, "fsdp": 4, "tensor": 2}
  c.mesh.dcn.update(data=4)
  with pytest.raises(ConfigError, match=r"^config.mesh.dcn: \{'data': 4, 'fsdp': 1, 'tensor': 1\} uses "
                     r"4 slices but there are 2$"):
    validate(c, devices)
  c.mesh.dcn.update(data=2)
  c.mesh.ici.update(fsdp=8)
  with pytest.raises(ConfigError, match=r"^config.mesh.ici: .* uses 16 devices per slice but there are 8$"):
    validate(c, devices)


def test_rows_not_contiguous_on_a_process_are_refused():
  d = cpu_devices(8, processes=4)  # process p owns d[2p], d[2p+1]
  order = [d[0], d[2], d[1], d[3], d[4], d[6], d[5], d[7]]
  mesh = Mesh(np.array(order, dtype=object).reshape(1, 8, 1), ("data", "fsdp", "tensor"))
  with pytest.raises(ValueError, match=r"^batch sharding: process 0 holds rows \[\(0, 1\), \(2, 3\)\], "
                     "not one contiguous block"):
    batch_shard(NamedSharding(mesh, batch_spec()), 8, 0)


def test_batch_not_divisible_by_row_shards_names_the_key():
  mesh = Mesh(np.array(cpu_devices(8), dtype=object).reshape(2, 4, 1), ("data", "fsdp", "tensor"))
  with pytest.raises(ValueError, match=r"^config.data.global_batch=6 does not split"):
    batch_shard(NamedSharding(mesh, P(("data", "fsdp"), None)), 6, 0)
