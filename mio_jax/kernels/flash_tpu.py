"""Mosaic TPU lowering of the Pallas flash attention, run per shard under the ambient mesh.

Kernels see [batch, heads, seq, head_dim] (Mosaic tiles the two minor block dims in (8, 128)),
the full K/V of one head stays in VMEM while the query blocks of that head stream past (the K/V
block index does not change along the innermost grid axis, so it is fetched once per head), and
dK/dV walks the query heads of a KV group as a sequential ("arbitrary") grid axis, accumulating
in the resident float32 output block. VMEM therefore grows with sequence length (about
4 * seq * head_dim * 2 bytes for bf16 K/V, double-buffered); the limit below allows 8K tokens at
head_dim 256. For longer sequences use splash attention (impl="splash").
"""

from __future__ import annotations

import functools

from jax.experimental.pallas import tpu as pltpu

from mio_jax.kernels.block_sizes import BlockSizes
from mio_jax.kernels.flash_attention import Lowering, flash_attention
from mio_jax.kernels.sharding import shard_over_mesh

VMEM_LIMIT_BYTES = 64 * 1024 * 1024


def _mosaic_params(kernel: str, blocks: BlockSizes, head_dim: int):
  del blocks, head_dim
  semantics = ("parallel", "parallel", "parallel")
  if kernel == "flash_attention_dkv":
    semantics += ("arbitrary",)  # the query heads of a group accumulate into one block
  return pltpu.CompilerParams(dimension_semantics=semantics, vmem_limit_bytes=VMEM_LIMIT_BYTES)


# Every block is a multiple of 128: key blocks and backward query blocks are sliced along lanes.
MOSAIC_TPU = Lowering(name="mosaic_tpu", heads_major=True, group_in_grid=True,
                      compiler_params=_mosaic_params, min_block=128, stats_as_rows=True)

# The TPU grid and BlockSpecs on CPU (sequential grid, so the group accumulation is honoured).
TPU_INTERPRET = Lowering(name="tpu_interpret", heads_major=True, group_in_grid=True, interpret=True,
                         stats_as_rows=True)


def flash_attention_tpu(q, k, v, q_segment_ids, kv_segment_ids, *, causal, blocks,
                        interpret=False):
  lowering = TPU_INTERPRET if interpret else MOSAIC_TPU
  fn = functools.partial(flash_attention, causal=causal, lowering=lowering, blocks=blocks)
  return shard_over_mesh(fn)(q, k, v, q_segment_ids, kv_segment_ids)
