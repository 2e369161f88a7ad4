"""Which devices share fast interconnect: the granules (TPU slices, GPU nodes) the dcn mesh axes span.

One rule, used by both config validation and mesh construction, so they cannot disagree:

1. `processes_per_node > 0` (config.mesh.processes_per_node): processes [k*N, (k+1)*N) form node k.
   For launchers whose hosts XLA cannot tell apart; ranks must be placed in contiguous blocks per
   node, as SLURM's default block distribution and torchrun do.
2. Devices with a `slice_index`: that index. On TPU it is the slice (ICI domain); on GPU (and CPU)
   multi-process jobs XLA sets it to the host, numbered by each host's kernel boot id, so one
   process per GPU still groups the node's 8 GPUs together.
3. Otherwise each process is its own granule (older runtimes without `slice_index`).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from typing import Any, Sequence

import jax


class TopologyError(ValueError):
  pass


@dataclasses.dataclass(frozen=True)
class Topology:
  """Devices grouped into granules; `unit` says what a granule is ("slice", "host", "process", ...)."""
  granules: tuple[tuple[Any, ...], ...]
  unit: str

  @property
  def num_granules(self) -> int:
    return len(self.granules)

  @property
  def devices_per_granule(self) -> int:
    return len(self.granules[0])

  @property
  def num_devices(self) -> int:
    return self.num_granules * self.devices_per_granule


def _granule_key(devices: Sequence[Any], processes_per_node: int) -> tuple[str, Any]:
  if processes_per_node > 0:
    return "node", lambda d: d.process_index // processes_per_node
  if all(getattr(d, "slice_index", None) is not None for d in devices):
    unit = "slice" if devices[0].platform == "tpu" else "host"
    return unit, lambda d: d.slice_index
  return "process", lambda d: d.process_index


def device_topology(devices: Sequence[Any] | None = None, *, processes_per_node: int = 0) -> Topology:
  """Group `devices` (default jax.devices()) into granules by the rule in the module docstring."""
  devices = list(devices if devices is not None else jax.devices())
  if processes_per_node < 0:
    raise TopologyError(f"config.mesh.processes_per_node={processes_per_node} must be 0 (auto) or positive")
  unit, key = _granule_key(devices, processes_per_node)
  groups: dict[Any, list[Any]] = collections.defaultdict(list)
  for d in devices:
    groups[key(d)].append(d)
  sizes = {k: len(v) for k, v in sorted(groups.items())}
  if len(set(sizes.values())) > 1:
    raise TopologyError(f"devices: each {unit} must hold the same number of devices, got {sizes} "
                        "(set config.mesh.processes_per_node if processes are not per-node blocks)")
  if unit == "process" and len(groups) > 1 and set(sizes.values()) == {1}:
    logging.getLogger(__name__).warning(
        "each process holds one device and the runtime names no hosts: every process is its own "
        "node, so ici axes (fsdp) stay within one device; set config.mesh.processes_per_node")
  return Topology(tuple(tuple(groups[k]) for k in sorted(groups)), unit)


def config_topology(mesh_config, devices: Sequence[Any] | None = None) -> Topology:
  """The topology for a mesh config: `device_topology` with its processes_per_node override."""
  return device_topology(devices, processes_per_node=int(mesh_config.processes_per_node))
