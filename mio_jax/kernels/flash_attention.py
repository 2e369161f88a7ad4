"""Flash attention with a custom VJP: padding, layout, GQA index maps and the three pallas_calls.

`flash_attention(q, k, v, q_segment_ids, kv_segment_ids, causal=..., lowering=..., blocks=...)`
takes the dispatch's layout (q [batch, q_len, heads, head_dim], k/v [batch, kv_len, kv_heads,
head_dim]) and a `Lowering` that says how a backend wants its pallas_calls (Triton, Mosaic TPU,
or interpret mode on CPU). The kernel bodies are in flash_kernels.py.

Grouped-query attention never repeats K/V: a query head's BlockSpec index map points at its KV
head (head // group), and the dK/dV kernel sums over the group inside one program.
Sequences are padded to a multiple of the blocks with a segment id no real token has, so padded
keys are invisible to real queries; padded rows are sliced off.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from mio_jax.kernels import flash_kernels
from mio_jax.kernels.block_sizes import BlockSizes

# Segment id given to padded positions; packing uses 0 for padding and 1.. for samples.
PAD_SEGMENT_ID = int(jnp.iinfo(jnp.int32).min)


@dataclasses.dataclass(frozen=True)
class Lowering:
  """How one backend runs the kernels.

  heads_major: kernels see [batch, heads, seq, head_dim] (Mosaic TPU needs seq x head_dim as the
    two minor block dims); otherwise the dispatch's [batch, seq, heads, head_dim] is used as is.
  group_in_grid: dK/dV walks the query heads of a KV group as a sequential grid axis (TPU);
    otherwise the kernel loops over them (Triton, whose grid is fully parallel).
  interpret: False, True, or an interpreter params object.
  compiler_params: fn(kernel_name, blocks, head_dim) -> compiler params for pallas_call.
  pad_head_dim_pow2: head_dim is zero-padded to the next power of two (Triton needs it).
  """
  name: str
  heads_major: bool
  group_in_grid: bool
  interpret: Any = False
  compiler_params: Callable[[str, BlockSizes, int], Any] | None = None
  pad_head_dim_pow2: bool = False
  min_block: int = 8  # smallest tile the backend takes (TPU: a 128-lane vreg row; Triton dot: 16)
  stats_as_rows: bool = False  # per-row lse/delta stored [.., 1, seq] (TPU), else [.., seq, 1]


def round_up(x: int, m: int) -> int:
  return -(-x // m) * m


def pad_axis(x, axis, size, value=0):
  if x.shape[axis] == size:
    return x
  pads = [(0, 0)] * x.ndim
  pads[axis] = (0, size - x.shape[axis])
  return jnp.pad(x, pads, constant_values=value)


def flash_attention(q, k, v, q_segment_ids, kv_segment_ids, *, causal: bool, lowering: Lowering,
                    blocks: BlockSizes):
  b, q_len, h, d = q.shape
  kv_len, kv_heads = k.shape[1], k.shape[2]
  if h % kv_heads:
    raise ValueError(f"num_heads={h} is not a multiple of num_kv_heads={kv_heads}")
  d_pad = pl.next_power_of_2(d) if lowering.pad_head_dim_pow2 else d
  blocks = fit_blocks(blocks, q_len, kv_len, lowering.min_block)
  q_pad = round_up(q_len, max(blocks.block_q, blocks.block_q_bwd))
  kv_pad = round_up(kv_len, max(blocks.block_kv, blocks.block_kv_bwd))
  q = pad_axis(pad_axis(q, 1, q_pad), 3, d_pad)
  k = pad_axis(pad_axis(k, 1, kv_pad), 3, d_pad)
  v = pad_axis(pad_axis(v, 1, kv_pad), 3, d_pad)
  q_seg = pad_axis(q_segment_ids.astype(jnp.int32), 1, q_pad, PAD_SEGMENT_ID)
  kv_seg = pad_axis(kv_segment_ids.astype(jnp.int32), 1, kv_pad, PAD_SEGMENT_ID)
  if lowering.heads_major:
    q, k, v = (x.transpose(0, 2, 1, 3) for x in (q, k, v))
  config = _Config(causal=causal, scale=d**-0.5, blocks=blocks, lowering=lowering)
  out = _flash(q, k, v, q_seg, kv_seg, config)
  if lowering.heads_major:
    out = out.transpose(0, 2, 1, 3)
  return out[:, :q_len, :, :d]


# Blocks are shrunk (to the backend's smallest) while they would pad a sequence by more than this:
# MIO's 2800 tokens pad to 3072 with 512-row blocks (10% more attention work), to 2816 with 256.
MAX_PADDING = 1 / 32


def fit_blocks(blocks: BlockSizes, q_len: int, kv_len: int, min_block: int) -> BlockSizes:
  """Shrinks blocks longer than the (power-of-two rounded) sequence, and blocks that would pad it
  by more than MAX_PADDING, so every length pads little."""
  for name in ("block_q", "block_kv", "block_q_bwd", "block_kv_bwd"):
    if getattr(blocks, name) % min_block:
      raise ValueError(f"attention_blocks.{name}={getattr(blocks, name)} must be a multiple of "
                       f"{min_block} on this backend")
  q, q_bwd = _fit_axis((blocks.block_q, blocks.block_q_bwd), q_len, min_block)
  kv, kv_bwd = _fit_axis((blocks.block_kv, blocks.block_kv_bwd), kv_len, min_block)
  return dataclasses.replace(blocks, block_q=q, block_kv=kv, block_q_bwd=q_bwd, block_kv_bwd=kv_bwd)


def _fit_axis(sizes: tuple[int, ...], n: int, min_block: int) -> list[int]:
  """The blocks of one axis (forward, backward), capped so that the largest pads n little: the
  largest power of two within MAX_PADDING of n, else the one that pads least."""
  sizes = [max(min(b, pl.next_power_of_2(n)), min_block) for b in sizes]
  top = max(sizes)
  candidates = [top >> i for i in range(top.bit_length()) if top >> i >= min_block]
  within = [c for c in candidates if round_up(n, c) - n <= n * MAX_PADDING]
  cap = within[0] if within else min(candidates, key=lambda c: (round_up(n, c), -c))
  return [min(b, cap) for b in sizes]


@dataclasses.dataclass(frozen=True)
class _Config:
  causal: bool
  scale: float
  blocks: BlockSizes
  lowering: Lowering


class _Layout:
  """BlockSpecs for [batch, seq, heads, d] or [batch, heads, seq, d] operands."""

  def __init__(self, heads_major: bool):
    self.heads_major = heads_major

  def dims(self, x):
    """(batch, seq, heads, head_dim) of an operand."""
    b, a1, a2, d = x.shape
    return (b, a2, a1, d) if self.heads_major else (b, a1, a2, d)

  def spec(self, block, head_dim, index_map):
    """index_map(*grid) -> (batch, head, seq_block)."""
    if self.heads_major:
      return pl.BlockSpec((None, None, block, head_dim),
                          lambda *g: (lambda b, h, s: (b, h, s, 0))(*index_map(*g)))
    return pl.BlockSpec((None, block, None, head_dim),
                        lambda *g: (lambda b, h, s: (b, s, h, 0))(*index_map(*g)))

  def group_spec(self, seq, group, head_dim):
    """The whole query group of one KV head, [group, seq, d] or [seq, group, d] in the kernel."""
    if self.heads_major:
      return pl.BlockSpec((None, None, group, seq, head_dim), lambda b, kh, j: (b, kh, 0, 0, 0))
    return pl.BlockSpec((None, seq, None, group, head_dim), lambda b, kh, j: (b, 0, kh, 0, 0))

  def split_group(self, x, group):
    if self.heads_major:
      b, h, t, d = x.shape
      return x.reshape(b, h // group, group, t, d)
    b, t, h, d = x.shape
    return x.reshape(b, t, h // group, group, d)


def _stat_shape_and_spec(b, h, q_len, bq, as_rows):
  """Per-query-row float32 statistics (lse, delta): shape and BlockSpec over (b, h, q block)."""
  if as_rows:
    return (b, h, 1, q_len), pl.BlockSpec((None, None, 1, bq), lambda b, h, i: (b, h, 0, i))
  return (b, h, q_len, 1), pl.BlockSpec((None, None, bq, 1), lambda b, h, i: (b, h, i, 0))


def _precision(dtype):
  # f32 inputs get true f32 matmuls (TPU and Triton would otherwise round to bf16 / tf32).
  return lax.Precision.HIGHEST if jnp.dtype(dtype) == jnp.float32 else None


def _call(kernel, config, name, head_dim, **kwargs):
  low = config.lowering
  params = low.compiler_params(name, config.blocks, head_dim) if low.compiler_params else None
  return pl.pallas_call(kernel, interpret=low.interpret, compiler_params=params, name=name,
                        **kwargs)


def _forward(q, k, v, q_seg, kv_seg, config: _Config):
  layout = _Layout(config.lowering.heads_major)
  b, q_len, h, d = layout.dims(q)
  kv_len, kv_heads = layout.dims(k)[1:3]
  group = h // kv_heads
  bq, bk = config.blocks.block_q, config.blocks.block_kv
  kernel = functools.partial(flash_kernels.forward_kernel, scale=config.scale,
                             causal=config.causal, block_kv=bk, precision=_precision(q.dtype),
                             skip_empty=config.blocks.skip_empty_blocks,
                             stats_rows=config.lowering.stats_as_rows)
  lse_shape, lse_spec = _stat_shape_and_spec(b, h, q_len, bq, config.lowering.stats_as_rows)
  out, lse = _call(
      kernel, config, "flash_attention_fwd", d,
      grid=(b, h, q_len // bq),
      in_specs=[
          layout.spec(bq, d, lambda b, h, i: (b, h, i)),
          layout.spec(kv_len, d, lambda b, h, i: (b, h // group, 0)),
          layout.spec(kv_len, d, lambda b, h, i: (b, h // group, 0)),
          pl.BlockSpec((None, bq, 1), lambda b, h, i: (b, i, 0)),
          pl.BlockSpec((None, 1, kv_len), lambda b, h, i: (b, 0, 0)),
      ],
      out_specs=[layout.spec(bq, d, lambda b, h, i: (b, h, i)), lse_spec],
      out_shape=[jax.ShapeDtypeStruct(q.shape, q.dtype),
                 jax.ShapeDtypeStruct(lse_shape, jnp.float32)],
  )(q, k, v, q_seg[:, :, None], kv_seg[:, None, :])
  return out, lse


def _dq(q, k, v, do, lse, delta, q_seg, kv_seg, config: _Config):
  layout = _Layout(config.lowering.heads_major)
  b, q_len, h, d = layout.dims(q)
  kv_len, kv_heads = layout.dims(k)[1:3]
  group = h // kv_heads
  bq, bk = config.blocks.block_q_bwd, config.blocks.block_kv_bwd
  kernel = functools.partial(flash_kernels.dq_kernel, scale=config.scale, causal=config.causal,
                             block_kv=bk, precision=_precision(q.dtype),
                             skip_empty=config.blocks.skip_empty_blocks,
                             stats_rows=config.lowering.stats_as_rows)
  _, row_stat = _stat_shape_and_spec(b, h, q_len, bq, config.lowering.stats_as_rows)
  return _call(
      kernel, config, "flash_attention_dq", d,
      grid=(b, h, q_len // bq),
      in_specs=[
          layout.spec(bq, d, lambda b, h, i: (b, h, i)),
          layout.spec(kv_len, d, lambda b, h, i: (b, h // group, 0)),
          layout.spec(kv_len, d, lambda b, h, i: (b, h // group, 0)),
          layout.spec(bq, d, lambda b, h, i: (b, h, i)),
          row_stat,
          row_stat,
          pl.BlockSpec((None, bq, 1), lambda b, h, i: (b, i, 0)),
          pl.BlockSpec((None, 1, kv_len), lambda b, h, i: (b, 0, 0)),
      ],
      out_specs=layout.spec(bq, d, lambda b, h, i: (b, h, i)),
      out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype),
  )(q, k, v, do, lse, delta, q_seg[:, :, None], kv_seg[:, None, :])


def _dkv(q, k, v, do, lse_rows, delta_rows, q_seg, kv_seg, config: _Config):
  """dK, dV in float32. lse_rows, delta_rows: [batch, heads, 1, q_len]."""
  low = config.lowering
  layout = _Layout(low.heads_major)
  b, q_len, h, d = layout.dims(q)
  kv_len, kv_heads = layout.dims(k)[1:3]
  group = h // kv_heads
  bq, bk = config.blocks.block_q_bwd, config.blocks.block_kv_bwd
  if low.group_in_grid:
    group_axis = None
  else:
    group_axis = 0 if low.heads_major else 1
  kernel = functools.partial(flash_kernels.dkv_kernel, scale=config.scale, causal=config.causal,
                             block_q=bq, precision=_precision(q.dtype), group_axis=group_axis,
                             group=group, skip_empty=config.blocks.skip_empty_blocks)
  kv_specs = [
      layout.spec(bk, d, lambda b, kh, j, *_: (b, kh, j)),
      layout.spec(bk, d, lambda b, kh, j, *_: (b, kh, j)),
      pl.BlockSpec((None, bk, 1), lambda b, kh, j, *_: (b, j, 0)),
  ]
  q_seg_spec = pl.BlockSpec((None, 1, q_len), lambda b, kh, *_: (b, 0, 0))
  if low.group_in_grid:
    grid = (b, kv_heads, kv_len // bk, group)
    q_spec = layout.spec(q_len, d, lambda b, kh, j, g: (b, kh * group + g, 0))
    row_spec = pl.BlockSpec((None, None, 1, q_len), lambda b, kh, j, g: (b, kh * group + g, 0, 0))
    q_side = (q, do, lse_rows, delta_rows)
  else:
    grid = (b, kv_heads, kv_len // bk)
    q_spec = layout.group_spec(q_len, group, d)
    row_spec = pl.BlockSpec((None, None, group, 1, q_len), lambda b, kh, j: (b, kh, 0, 0, 0))
    split_rows = lambda x: x.reshape(b, kv_heads, group, 1, q_len)
    q_side = (layout.split_group(q, group), layout.split_group(do, group),
              split_rows(lse_rows), split_rows(delta_rows))
  out_spec = layout.spec(bk, d, lambda b, kh, j, *_: (b, kh, j))
  out_shape = jax.ShapeDtypeStruct(k.shape, jnp.float32)
  return _call(
      kernel, config, "flash_attention_dkv", d,
      grid=grid,
      in_specs=[q_spec, q_spec, row_spec, row_spec, q_seg_spec, *kv_specs],
      out_specs=[out_spec, out_spec],
      out_shape=[out_shape, out_shape],
  )(*q_side, q_seg[:, None, :], k, v, kv_seg[:, :, None])


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _flash(q, k, v, q_seg, kv_seg, config):
  return _forward(q, k, v, q_seg, kv_seg, config)[0]


def _flash_fwd(q, k, v, q_seg, kv_seg, config):
  out, lse = _forward(q, k, v, q_seg, kv_seg, config)
  return out, (q, k, v, q_seg, kv_seg, out, lse)


def _flash_bwd(config, residuals, do):
  q, k, v, q_seg, kv_seg, out, lse = residuals
  do = do.astype(q.dtype)
  # delta_i = sum_d o_i do_i: one fused XLA reduction, in the kernels' [batch, heads, seq] order.
  delta = jnp.sum(out.astype(jnp.float32) * do.astype(jnp.float32), axis=-1)
  if not config.lowering.heads_major:
    delta = delta.transpose(0, 2, 1)
  delta = delta.reshape(lse.shape)  # [batch, heads, q_len] as rows or columns, like lse
  dq = _dq(q, k, v, do, lse, delta, q_seg, kv_seg, config)
  as_rows = lambda x: x.reshape(x.shape[0], x.shape[1], 1, -1)  # free reshape
  dk, dv = _dkv(q, k, v, do, as_rows(lse), as_rows(delta), q_seg, kv_seg, config)
  return dq, dk.astype(k.dtype), dv.astype(v.dtype), None, None


_flash.defvjp(_flash_fwd, _flash_bwd)
