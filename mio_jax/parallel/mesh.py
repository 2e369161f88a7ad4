"""The one device mesh: axes (data, fsdp, tensor), sized inside a slice/node (ici) and across (dcn).

`config.mesh.ici` and `config.mesh.dcn` give per-axis sizes; one -1 in each fills what is left.
With more than one slice (TPU multislice) or node (GPU), the mesh is a hybrid one so that the dcn
axes cross the slow network and the ici axes stay inside fast interconnect.
"""

from __future__ import annotations

import math
import os

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh

from mio_jax.parallel.rules import MESH_AXES


class MeshConfigError(ValueError):
  pass


def maybe_initialize_distributed() -> None:
  """Join the multi-process job when launched as one (TPU pod, SLURM or explicit coordinator)."""
  if jax.distributed.is_initialized():
    return
  launched_multi = any(k in os.environ for k in (
      "JAX_COORDINATOR_ADDRESS", "SLURM_NTASKS", "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS"))
  if launched_multi:
    jax.distributed.initialize()


def resolve_axis_sizes(sizes: dict[str, int], total: int, key: str) -> tuple[int, ...]:
  """Per-axis sizes in MESH_AXES order with one -1 filled so the product is `total`."""
  unknown = [a for a in sizes if a not in MESH_AXES]
  if unknown:
    raise MeshConfigError(f"{key}: unknown mesh axis {unknown[0]!r}; axes are {MESH_AXES}")
  values = [int(sizes.get(a, 1)) for a in MESH_AXES]
  fills = [i for i, v in enumerate(values) if v == -1]
  if len(fills) > 1:
    raise MeshConfigError(f"{key}: at most one axis may be -1, got {dict(zip(MESH_AXES, values))}")
  known = math.prod(v for v in values if v != -1)
  if any(v == 0 or v < -1 for v in values):
    raise MeshConfigError(f"{key}: axis sizes must be positive or -1, got {dict(zip(MESH_AXES, values))}")
  if fills:
    if total % known:
      raise MeshConfigError(f"{key}: {dict(zip(MESH_AXES, values))} cannot fill {total} devices")
    values[fills[0]] = total // known
  if math.prod(values) != total:
    raise MeshConfigError(
        f"{key}: {dict(zip(MESH_AXES, values))} uses {math.prod(values)} devices but there are {total}")
  return tuple(values)


def mesh_shape(mesh_config, num_devices: int, num_slices: int = 1) -> tuple[tuple[int, ...], tuple[int, ...]]:
  """(ici_shape, dcn_shape) for the config, validated against the device count."""
  dcn = resolve_axis_sizes(dict(mesh_config.dcn), num_slices, "config.mesh.dcn")
  ici = resolve_axis_sizes(dict(mesh_config.ici), num_devices // num_slices, "config.mesh.ici")
  return ici, dcn


def _num_slices(devices) -> int:
  slice_ids = {getattr(d, "slice_index", 0) for d in devices}
  if len(slice_ids) > 1:
    return len(slice_ids)
  return jax.process_count() if devices[0].platform == "gpu" and jax.process_count() > 1 else 1


def make_mesh(mesh_config, devices=None) -> Mesh:
  devices = list(devices if devices is not None else jax.devices())
  num_slices = _num_slices(devices)
  ici, dcn = mesh_shape(mesh_config, len(devices), num_slices)
  if num_slices > 1:
    granule = "slice_index" if hasattr(devices[0], "slice_index") else "process_index"
    grid = mesh_utils.create_hybrid_device_mesh(
        ici, dcn, devices, process_is_granule=granule == "process_index", allow_split_physical_axes=True)
  else:
    try:
      grid = mesh_utils.create_device_mesh(ici, devices, allow_split_physical_axes=True)
    except (NotImplementedError, AssertionError, ValueError):
      grid = np.asarray(devices).reshape(ici)  # CPU / unknown topology: plain order is fine.
  return Mesh(grid, MESH_AXES)
