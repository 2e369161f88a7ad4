"""Mesh sizes from config: -1 fills, mismatches name the key."""

import ml_collections
import pytest

from mio_jax.parallel.mesh import MeshConfigError, make_mesh, resolve_axis_sizes


def test_minus_one_fills_the_rest():
  assert resolve_axis_sizes({"data": -1, "fsdp": 2, "tensor": 2}, 8, "k") == (2, 2, 2)
  assert resolve_axis_sizes({"fsdp": -1}, 8, "k") == (1, 8, 1)


@pytest.mark.parametrize("sizes,match", [
    ({"data": 3, "fsdp": 1, "tensor": 1}, r"config.mesh.ici: .* uses 3 devices but there are 8"),
    ({"data": -1, "fsdp": -1}, r"config.mesh.ici: at most one axis may be -1"),
    ({"data": -1, "fsdp": 3}, r"config.mesh.ici: .* cannot fill 8 devices"),
    ({"pipeline": 2}, r"config.mesh.ici: unknown mesh axis 'pipeline'"),
])
def test_bad_sizes_name_the_key(sizes, match):
  with pytest.raises(MeshConfigError, match=match):
    resolve_axis_sizes(sizes, 8, "config.mesh.ici")


def test_mesh_has_the_three_axes_over_all_devices():
  mesh = make_mesh(ml_collections.ConfigDict(dict(ici=dict(data=2, fsdp=-1, tensor=2), dcn=dict(data=-1),
                                                processes_per_node=0)))
  assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
  assert mesh.devices.size == 8
