"""Tile sizes of the Pallas flash attention kernels, with per-backend defaults and config overrides.

`config.model.attention_blocks` (an optional dict, e.g. {"block_q": 256}) overrides any field of
the backend default. Sequences are padded inside the kernel to a multiple of every block, so the
blocks need not divide the sequence length.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping


@dataclasses.dataclass(frozen=True)
class BlockSizes:
  block_q: int        # query rows per program, forward
  block_kv: int       # key rows per inner-loop step, forward
  block_q_bwd: int    # query rows per step in both backward kernels
  block_kv_bwd: int   # key rows per step in both backward kernels
  num_warps: int | None = None  # Triton only; None picks from head_dim
  num_stages: int = 2           # Triton only
  # Skip tiles whose query and key segment ids cannot meet (packed samples): less work on packed
  # batches, one branch per tile on dense ones.
  skip_empty_blocks: bool = True

  def __post_init__(self):
    for field in ("block_q", "block_kv", "block_q_bwd", "block_kv_bwd"):
      value = getattr(self, field)
      # Powers of two: Triton needs them, and the padded length is then a multiple of every block.
      if value < 8 or value & (value - 1):
        raise ValueError(f"attention_blocks.{field}={value} must be a power of two >= 8")


# Tuned starting points. GPU: FlashAttention-2 style Triton tiles for Hopper (128x64 forward,
# 64x64 backward; not yet measured on this code base). TPU: MXU-sized tiles, multiples of the
# 128-lane vreg width that Mosaic needs for the lane-dim key slices. CPU (interpret mode): small.
DEFAULT_BLOCK_SIZES = {
    "gpu": BlockSizes(block_q=128, block_kv=64, block_q_bwd=64, block_kv_bwd=64),
    "tpu": BlockSizes(block_q=512, block_kv=512, block_q_bwd=256, block_kv_bwd=512),
    "cpu": BlockSizes(block_q=64, block_kv=64, block_q_bwd=64, block_kv_bwd=64),
}


# Triton keeps a [block_q, head_dim] f32 accumulator in registers: halve the tiles past 128.
_GPU_LARGE_HEAD = BlockSizes(block_q=64, block_kv=64, block_q_bwd=32, block_kv_bwd=32)


def default_block_sizes(backend: str, head_dim: int = 128) -> BlockSizes:
  if backend == "gpu" and head_dim > 128:
    return _GPU_LARGE_HEAD
  return DEFAULT_BLOCK_SIZES.get(backend, DEFAULT_BLOCK_SIZES["cpu"])


def block_sizes_from_config(config: Any, backend: str) -> BlockSizes:
  """The backend default, with `config.model.attention_blocks` (if any) applied on top."""
  base = default_block_sizes(backend)
  model = getattr(config, "model", None)
  overrides = None
  if model is not None:
    overrides = model.get("attention_blocks") if isinstance(model, Mapping) else getattr(
        model, "attention_blocks", None)
  if not overrides:
    return base
  names = {f.name for f in dataclasses.fields(BlockSizes)}
  unknown = sorted(set(overrides) - names)
  if unknown:
    raise ValueError(f"config.model.attention_blocks: unknown keys {unknown}; known: {sorted(names)}")
  return dataclasses.replace(base, **dict(overrides))
