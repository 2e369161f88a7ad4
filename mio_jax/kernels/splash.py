"""jax's TPU splash attention behind the dispatch's signature, per shard under the ambient mesh.

Splash skips fully masked blocks using a static causal mask and applies segment ids inside the
kernel; it takes [heads, seq, head_dim] per batch row (vmapped here), does not scale the logits
(so q is scaled first), and handles GQA itself. Sequences are padded to the block size with a
segment id no real token has. Block sizes come from the same `BlockSizes` as our kernel.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as splash_mask

from mio_jax.kernels.block_sizes import BlockSizes
from mio_jax.kernels.flash_attention import PAD_SEGMENT_ID, pad_axis, round_up, fit_blocks
from mio_jax.kernels.sharding import shard_over_mesh


def _splash_blocks(blocks: BlockSizes) -> splash.BlockSizes:
  return splash.BlockSizes(block_q=blocks.block_q, block_kv=blocks.block_kv,
                           block_kv_compute=blocks.block_kv, block_q_dkv=blocks.block_q_bwd,
                           block_kv_dkv=blocks.block_kv_bwd,
                           block_kv_dkv_compute=blocks.block_kv_bwd, use_fused_bwd_kernel=True)


def _splash_local(q, k, v, q_seg, kv_seg, *, causal, blocks, interpret):
  """Splash on one shard: q [b, q_len, h, d], k/v [b, kv_len, kv_h, d]."""
  b, q_len, h, d = q.shape
  kv_len = k.shape[1]
  blocks = fit_blocks(blocks, q_len, kv_len, min_block=128)  # splash tiles: 128-lane multiples
  q_pad = round_up(q_len, max(blocks.block_q, blocks.block_q_bwd))
  kv_pad = round_up(kv_len, max(blocks.block_kv, blocks.block_kv_bwd))
  q = pad_axis(q * jnp.asarray(d**-0.5, q.dtype), 1, q_pad)
  k, v = pad_axis(k, 1, kv_pad), pad_axis(v, 1, kv_pad)
  seg = splash.SegmentIds(
      q=pad_axis(q_seg.astype(jnp.int32), 1, q_pad, PAD_SEGMENT_ID),
      kv=pad_axis(kv_seg.astype(jnp.int32), 1, kv_pad, PAD_SEGMENT_ID))
  shape = (q_pad, kv_pad)
  head_mask = splash_mask.CausalMask(shape) if causal else splash_mask.FullMask(shape)
  kernel = splash.make_splash_mha(
      splash_mask.MultiHeadMask([head_mask] * h), block_sizes=_splash_blocks(blocks),
      head_shards=1, q_seq_shards=1, interpret=interpret)
  heads_major = lambda x: x.transpose(0, 2, 1, 3)
  out = jax.vmap(kernel)(heads_major(q), heads_major(k), heads_major(v), segment_ids=seg)
  return heads_major(out)[:, :q_len]


def splash_attention(q, k, v, q_segment_ids, kv_segment_ids, *, causal, blocks,
                     interpret=False):
  fn = functools.partial(_splash_local, causal=causal, blocks=blocks, interpret=interpret)
  return shard_over_mesh(fn)(q, k, v, q_segment_ids, kv_segment_ids)
