"""Fused attention kernels, named in mio_jax.model.attention.KERNELS (imported from there by name).

  pallas  our Pallas flash attention: Triton on NVIDIA GPU, Mosaic on TPU (per shard under the
          ambient mesh), interpret mode on CPU (slow; for tests and CPU users)
  splash  jax's TPU splash attention, wrapped the same way (TPU only; interpret mode on CPU)
  cudnn   jax.nn.dot_product_attention(implementation="cudnn"); raises unless every row is a
          single segment, since cuDNN cannot apply segment ids
Every kernel is called with the backend it lowers for (an AOT compile for a TPU traces on a CPU
host) and its tiles (`blocks`, None: the backend's defaults; `block_sizes_from_config` reads
config.model.attention_blocks): both are passed down from the model's AttentionKernel, never read
from module state while tracing.
"""

from __future__ import annotations

from mio_jax.kernels.block_sizes import BlockSizes, block_sizes_from_config, default_block_sizes
from mio_jax.kernels.cudnn import cudnn_attention
from mio_jax.kernels.flash_gpu import flash_attention_gpu
from mio_jax.kernels.flash_tpu import flash_attention_tpu

__all__ = ["BlockSizes", "block_sizes_from_config", "cudnn_attention", "default_block_sizes",
           "pallas_attention", "splash_attention_impl"]


def pallas_attention(q, k, v, q_segment_ids, kv_segment_ids, *, causal, backend, blocks=None):
  blocks = blocks or default_block_sizes(backend, q.shape[-1])
  if backend == "tpu":
    return flash_attention_tpu(q, k, v, q_segment_ids, kv_segment_ids, causal=causal, blocks=blocks)
  return flash_attention_gpu(q, k, v, q_segment_ids, kv_segment_ids, causal=causal, blocks=blocks,
                             interpret=backend != "gpu")


def splash_attention_impl(q, k, v, q_segment_ids, kv_segment_ids, *, causal, backend, blocks=None):
  from mio_jax.kernels.splash import splash_attention  # jax's TPU ops, imported when first used
  if backend == "gpu":
    raise ValueError("attention impl='splash' is TPU-only; use impl='pallas' or 'cudnn' on GPU")
  return splash_attention(q, k, v, q_segment_ids, kv_segment_ids, causal=causal,
                          blocks=blocks or default_block_sizes(backend), interpret=backend != "tpu")

