"""TPU slice names (v5p-128, v5e-256, ...) -> libtpu topologies and per-chip numbers, for AOT compiles.

Cloud names count TensorCores on v4/v5p (two per chip) and chips on v5e/v6e. The torus shapes are
those Cloud TPU provisions (MaxText's accelerator_to_spec_map). Per-chip numbers are Google's
published specs: dense bf16 peak, HBM capacity and HBM bandwidth.
"""

from __future__ import annotations

import dataclasses
import os

from mio_jax.parallel.topology import Topology


@dataclasses.dataclass(frozen=True)
class TpuChip:
  generation: str
  jax_prefix: str        # libtpu's topology prefix ("v5p:4x4x4")
  cores_per_name: int    # how many the "-N" in a Cloud name counts per chip (2: TensorCores)
  peak_bf16_tflops: float
  hbm_gib: float
  hbm_gb_per_s: float
  torus_3d: bool


CHIPS = {
    # generation: chip                 bf16 TFLOP/s  HBM GiB  HBM GB/s
    "v4": TpuChip("v4", "v4", 2, 275.0, 32.0, 1228.0, True),
    "v5p": TpuChip("v5p", "v5p", 2, 459.0, 95.0, 2765.0, True),
    "v5e": TpuChip("v5e", "v5e", 1, 197.0, 16.0, 819.0, False),
    "v6e": TpuChip("v6e", "v6e", 1, 918.0, 32.0, 1640.0, False),
}

_SHAPES_3D = {4: "2x2x1", 8: "2x2x2", 16: "2x2x4", 32: "2x4x4", 64: "4x4x4", 128: "4x4x8",
              256: "4x8x8", 512: "8x8x8", 1024: "8x8x16", 2048: "8x16x16", 4096: "16x16x16"}
_SHAPES_2D = {1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16",
              256: "16x16"}


class TopologyNameError(ValueError):
  pass


@dataclasses.dataclass(frozen=True)
class TpuSlice:
  name: str          # as given, e.g. "v5p-128"
  chip: TpuChip
  chips: int         # per slice
  jax_name: str      # e.g. "v5p:4x4x4"


def parse_slice(name: str) -> TpuSlice:
  """"v5p-128" -> 64 v5p chips in a 4x4x4 torus; one line naming the problem otherwise."""
  generation, _, count = name.partition("-")
  if generation not in CHIPS or not count.isdigit():
    raise TopologyNameError(f"--topology={name!r}: expected GENERATION-N with GENERATION one of "
                            f"{', '.join(CHIPS)} (e.g. v5p-128, v5e-256)")
  chip = CHIPS[generation]
  chips, rest = divmod(int(count), chip.cores_per_name)
  shapes = _SHAPES_3D if chip.torus_3d else _SHAPES_2D
  if rest or chips not in shapes:
    sizes = ", ".join(f"{generation}-{c * chip.cores_per_name}" for c in shapes)
    raise TopologyNameError(f"--topology={name!r} is not a {generation} slice size; choose one of {sizes}")
  return TpuSlice(name, chip, chips, f"{chip.jax_prefix}:{shapes[chips]}")


def compile_only_topology(tpu_slice: TpuSlice, num_slices: int = 1) -> Topology:
  """libtpu's compile-only devices for `num_slices` such slices, grouped as training groups them.

  On a real pod every device has a slice_index; libtpu's single-slice description has none, and
  topology.device_topology would then take each host for a granule, so the slices are grouped here.
  """
  if num_slices < 1:
    raise TopologyNameError(f"--num_slices={num_slices} must be at least 1")
  # Several processes may hold libtpu's lock file; topology-only use needs no exclusivity.
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  from jax.experimental import topologies
  kwargs = {"num_slices": num_slices} if num_slices > 1 else {}
  devices = list(topologies.get_topology_desc(tpu_slice.jax_name, "tpu", **kwargs).devices)
  groups: dict[int, list] = {}
  for d in devices:
    groups.setdefault(getattr(d, "slice_index", 0), []).append(d)
  return Topology(tuple(tuple(groups[k]) for k in sorted(groups)), "slice")
