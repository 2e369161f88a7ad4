"""Stand-in device lists for mesh and row-split tests of topologies this machine does not have.

mesh_utils and jax.sharding read only these attributes, so a Mesh over them gives the real device
grid and NamedSharding.devices_indices_map gives the real rows per device.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class FakeDevice:
  id: int
  process_index: int
  platform: str = "gpu"
  device_kind: str = "NVIDIA H100 80GB HBM3"
  slice_index: int | None = None  # None: the runtime does not set one
  coords: tuple[int, int, int] = (0, 0, 0)
  core_on_chip: int = 0

  def __repr__(self):
    return f"d{self.id}"


def gpu_nodes(nodes: int, gpus_per_node: int, processes_per_node: int, *,
              with_slice_index: bool = True) -> list[FakeDevice]:
  """`nodes` hosts of `gpus_per_node` GPUs, each host's GPUs split evenly over its processes,
  ranks in blocks per node; XLA numbers slice_index by host (boot id)."""
  per_process = gpus_per_node // processes_per_node
  return [FakeDevice(id=i, process_index=i // per_process,
                     slice_index=i // gpus_per_node if with_slice_index else None)
          for i in range(nodes * gpus_per_node)]


def tpu_v4_slices(num_slices: int, hosts_per_slice: int) -> list[FakeDevice]:
  """Slices of 8 TPU v4 chips (a 2x2x2 torus), chip (x, y, z) = id x + 2y + 4z within its slice;
  chips split over the slice's hosts in id order."""
  per_host = 8 // hosts_per_slice
  return [FakeDevice(id=s * 8 + c, process_index=s * hosts_per_slice + c // per_host, platform="tpu",
                     device_kind="TPU v4", slice_index=s, coords=(c % 2, c // 2 % 2, c // 4))
          for s in range(num_slices) for c in range(8)]


def cpu_devices(n: int, processes: int = 1) -> list[FakeDevice]:
  return [FakeDevice(id=i, process_index=i * processes // n, platform="cpu", device_kind="cpu")
          for i in range(n)]
