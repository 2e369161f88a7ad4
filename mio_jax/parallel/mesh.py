"""The one device mesh: axes (data, fsdp, tensor), sized inside a granule (ici) and across them (dcn).

`config.mesh.ici` and `config.mesh.dcn` give per-axis sizes; one -1 in each fills what is left.
A granule is a TPU slice or a GPU node (mio_jax/parallel/topology.py decides which devices form
one); the dcn axes cross the slow network between granules and the ici axes stay inside each.
"""

from __future__ import annotations

import math
import os
import socket
import time
from typing import Sequence

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh

from mio_jax.parallel.rules import MESH_AXES
from mio_jax.parallel.topology import Topology, TopologyError, config_topology


class MeshConfigError(ValueError):
  pass


_LAUNCHER_VARS = ("JAX_COORDINATOR_ADDRESS", "SLURM_NTASKS", "TPU_WORKER_HOSTNAMES",
                  "MEGASCALE_COORDINATOR_ADDRESS")


def _on_cloud_tpu_vm() -> bool:
  """TPU chips on this host (PCI ids, read without starting a backend): a TPU VM, whose pod
  workers jax finds through the metadata server (gcloud ... ssh --worker=all sets no variable)."""
  if os.environ.get("JAX_PLATFORMS", "").strip() == "cpu":
    return False
  try:
    from jax._src import hardware_utils  # no public accessor; checked on jax 0.10-0.12
    return hardware_utils.num_available_tpu_chips_and_device_id()[0] > 0
  except Exception:  # noqa: BLE001 - any failure means "not a TPU VM we can detect"
    return False


def _wait_for_coordinator(address: str, timeout_s: float) -> None:
  """Fail in one line if nothing listens at `address`: jax's client aborts the process instead."""
  host, _, port = address.rpartition(":")
  deadline = time.monotonic() + timeout_s
  while True:
    try:
      with socket.create_connection((host.strip("[]"), int(port)), timeout=min(5.0, timeout_s)):
        return
    except (OSError, ValueError) as e:
      if isinstance(e, ValueError) or time.monotonic() >= deadline:
        raise MeshConfigError(f"JAX_COORDINATOR_ADDRESS={address}: no coordinator answered within "
                              f"{timeout_s:g}s ({type(e).__name__}: {e}); is process 0 running "
                              "and the address reachable from this host?") from None
      time.sleep(0.5)


def maybe_initialize_distributed(timeout_s: int = 300) -> None:
  """Join the multi-process job when launched as one (TPU pod, SLURM or explicit coordinator).

  JAX_COORDINATOR_ADDRESS with JAX_NUM_PROCESSES and JAX_PROCESS_ID starts an explicit job (jax
  0.10 itself reads only the address); otherwise jax's cluster detection fills in what is unset.
  """
  if jax.distributed.is_initialized():
    return
  if not any(k in os.environ for k in _LAUNCHER_VARS) and not _on_cloud_tpu_vm():
    return
  address = os.environ.get("JAX_COORDINATOR_ADDRESS")
  num, pid = os.environ.get("JAX_NUM_PROCESSES"), os.environ.get("JAX_PROCESS_ID")
  if (num is None) != (pid is None):
    raise MeshConfigError("JAX_NUM_PROCESSES and JAX_PROCESS_ID must be set together, got "
                          f"JAX_NUM_PROCESSES={num} JAX_PROCESS_ID={pid}")
  num, pid = (int(num), int(pid)) if num is not None else (None, None)
  if address and pid:  # process 0 starts the coordinator; the others must reach it
    _wait_for_coordinator(address, timeout_s)
  jax.distributed.initialize(address, num, pid, initialization_timeout=timeout_s)


def resolve_axis_sizes(sizes: dict[str, int], total: int, key: str,
                       unit: str = "devices") -> tuple[int, ...]:
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
      raise MeshConfigError(f"{key}: {dict(zip(MESH_AXES, values))} cannot fill {total} {unit}")
    values[fills[0]] = total // known
  if math.prod(values) != total:
    raise MeshConfigError(
        f"{key}: {dict(zip(MESH_AXES, values))} uses {math.prod(values)} {unit} but there are {total}")
  return tuple(values)


def mesh_topology(mesh_config, devices=None) -> Topology:
  """The device topology for this config (jax.devices() by default), errors as MeshConfigError."""
  try:
    return config_topology(mesh_config, devices)
  except TopologyError as e:
    raise MeshConfigError(str(e)) from None


def mesh_shape(mesh_config, topology: Topology) -> tuple[tuple[int, ...], tuple[int, ...]]:
  """(ici_shape, dcn_shape) for the config: dcn over the granules, ici over each granule's devices."""
  dcn = resolve_axis_sizes(dict(mesh_config.dcn), topology.num_granules, "config.mesh.dcn",
                           f"{topology.unit}s")
  ici = resolve_axis_sizes(dict(mesh_config.ici), topology.devices_per_granule, "config.mesh.ici",
                           "devices" if topology.num_granules == 1 else f"devices per {topology.unit}")
  return ici, dcn


def _granule_grid(ici: tuple[int, ...], devices) -> np.ndarray:
  try:  # TPU: follows the torus; GPU: sorts by global id
    return mesh_utils.create_device_mesh(ici, devices, allow_split_physical_axes=True)
  except (NotImplementedError, AssertionError, ValueError, AttributeError):
    return np.asarray(devices, dtype=object).reshape(ici)  # CPU / unknown topology: plain order


def make_mesh(mesh_config, devices: Sequence | Topology | None = None) -> Mesh:
  """The (data, fsdp, tensor) mesh over `devices` (default jax.devices()) or a Topology of them.

  On each axis, index = dcn index * ici size + ici index: granules are the outer blocks.
  """
  topology = devices if isinstance(devices, Topology) else mesh_topology(mesh_config, devices)
  ici, dcn = mesh_shape(mesh_config, topology)
  # As mesh_utils.create_hybrid_device_mesh, but over our granules (it knows only slices or processes).
  grids = [_granule_grid(ici, list(g)) for g in topology.granules]
  blocks = np.empty(dcn, dtype=object)
  for i, index in enumerate(np.ndindex(*dcn)):
    blocks[index] = grids[i]
  return Mesh(np.block(blocks.tolist()), MESH_AXES)
