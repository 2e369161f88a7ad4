"""NVIDIA GPU lowering of the Pallas flash attention: Triton, plus the CPU interpret variant.

Why Triton rather than Mosaic GPU on the pinned jax (0.10): the Triton backend lowers the
generic `pallas_call` + BlockSpec kernels in flash_kernels.py unchanged (the same bodies run on
TPU), handles dynamic-bound loops and segment-id masks, and runs on Ampere and Hopper alike.
Mosaic GPU reaches higher Hopper throughput (wgmma, TMA, warp specialisation) but needs a
separate kernel written against its own warpgroup/barrier API, and jax's own Mosaic GPU
attention has no segment ids or causal backward yet. The Triton backend is deprecated from jax
0.11 onward; when it goes, a Mosaic GPU body slots in as another `Lowering`.
"""

from __future__ import annotations

import functools

try:
  from jax.experimental.pallas import triton as plgpu
except ImportError:  # deprecated from jax 0.11; a later jax may drop it
  plgpu = None

from mio_jax.kernels.block_sizes import BlockSizes
from mio_jax.kernels.flash_attention import Lowering, flash_attention
from mio_jax.kernels.sharding import shard_over_mesh


def _triton_params(kernel: str, blocks: BlockSizes, head_dim: int):
  if plgpu is None:
    raise NotImplementedError("this jax has no Pallas Triton backend; use impl='xla' on GPU")
  if blocks.num_warps is not None:
    warps = blocks.num_warps
  elif kernel == "flash_attention_fwd":
    warps = 4 if head_dim <= 64 else 8
  else:
    warps = 4 if blocks.block_q_bwd * blocks.block_kv_bwd < 128 * 128 else 8
  return plgpu.CompilerParams(num_warps=warps, num_stages=blocks.num_stages)


TRITON = Lowering(name="triton", heads_major=False, group_in_grid=False,
                  compiler_params=_triton_params, pad_head_dim_pow2=True, min_block=16)

# CPU: the same grid and BlockSpecs as Triton, run by the Pallas HLO interpreter.
INTERPRET = Lowering(name="interpret", heads_major=False, group_in_grid=False, interpret=True)


def flash_attention_gpu(q, k, v, q_segment_ids, kv_segment_ids, *, causal, blocks, interpret=False):
  # XLA's partitioner cannot split a Triton custom call (it would gather the operands), so under a
  # mesh the kernel runs per shard like the TPU one.
  lowering = INTERPRET if interpret else TRITON
  fn = functools.partial(flash_attention, causal=causal, lowering=lowering, blocks=blocks)
  return shard_over_mesh(fn)(q, k, v, q_segment_ids, kv_segment_ids)
