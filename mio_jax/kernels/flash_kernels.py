"""Pallas kernel bodies of flash attention (FlashAttention-2), shared by every lowering.

Each body sees 2-D refs for one (batch, head) pair, already squeezed by its BlockSpecs:
  q-side rows as [rows, head_dim]; per-row statistics (lse, delta) as columns [rows, 1] in the
  forward and dQ kernels (lane-dense rows [1, rows] in memory on TPU, converted in-kernel) and as
  rows [1, rows] in dK/dV, which works on the transposed scores so every matmul is a plain or
  rhs-transposed one, the forms Mosaic TPU and Triton both lower natively.
The bodies loop over key (or query) blocks inside the kernel with `lax.fori_loop`, skipping blocks
that causality masks out and (with skip_empty) tiles whose segment ids cannot meet. Masked
entries are zeroed with a select after the exponential, so a row that sees no key at all
(padding, or an empty segment) yields zeros, never NaN.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

# Finite, so that "masked minus running max" never produces inf - inf.
MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)

_NN = (((1,), (0,)), ((), ()))  # a @ b
_NT = (((1,), (1,)), ((), ()))  # a @ b.T


def _dot(a, b, dims, precision):
  return lax.dot_general(a, b, dims, precision=precision, preferred_element_type=jnp.float32)


def _mask(rows_start, cols_start, rows_seg, cols_seg, causal, *, transposed):
  """Boolean [rows, cols]: same segment, and (if causal) key position <= query position.

  Not transposed: rows are queries, columns keys. Transposed (dK/dV): rows are keys.
  """
  mask = rows_seg == cols_seg
  if causal:
    shape = mask.shape
    row_pos = rows_start + lax.broadcasted_iota(jnp.int32, shape, 0)
    col_pos = cols_start + lax.broadcasted_iota(jnp.int32, shape, 1)
    mask &= (row_pos <= col_pos) if transposed else (col_pos <= row_pos)
  return mask


def _col_to_row(col):
  """[n, 1] -> [1, n] via an aligned [n, 128] transpose (Mosaic transposes whole vreg tiles)."""
  return jnp.broadcast_to(col, (col.shape[0], 128)).T[:1, :]


def _row_to_col(row):
  """[1, n] -> [n, 1], the inverse of _col_to_row."""
  return jnp.broadcast_to(row, (128, row.shape[1])).T[:, :1]


def _id_range(seg):
  return jnp.min(seg), jnp.max(seg)


def _skip_unless_ids_meet(skip, range_a, seg_b, compute, carry):
  """compute(carry), or carry unchanged when no id of block a can equal one of block b.

  Disjoint [min, max] id ranges prove the tile fully masked (packed samples that do not overlap),
  so its loads and matmuls are skipped; overlapping ranges compute (the mask stays exact).
  """
  if not skip:
    return compute(carry)
  lo_b, hi_b = _id_range(seg_b)
  meet = (range_a[0] <= hi_b) & (lo_b <= range_a[1])
  return lax.cond(meet, compute, lambda c: c, carry)


def _causal_kv_blocks(q_start, block_q, block_kv, num_kv_blocks, causal):
  """Number of key blocks a query block starting at q_start can see."""
  if not causal:
    return num_kv_blocks
  return jnp.minimum(num_kv_blocks, lax.div(q_start + block_q + block_kv - 1, block_kv))


def forward_kernel(q_ref, k_ref, v_ref, q_seg_ref, kv_seg_ref, o_ref, lse_ref, *,
                   scale, causal, block_kv, precision, skip_empty, stats_rows):
  """One query block against all keys: o = softmax(q k^T * scale) v, lse per query row.

  stats_rows: lse is stored lane-dense as [1, block_q] (TPU, where a [rows, 1] f32 array is padded
  to 128 lanes in HBM), else as the column [block_q, 1].
  """
  block_q, head_dim = q_ref.shape
  q_start = pl.program_id(2) * block_q
  q = q_ref[...]
  q_seg = q_seg_ref[...]  # [block_q, 1]
  q_ids = _id_range(q_seg)

  def body(j, carry):
    kv_start = pl.multiple_of(j * block_kv, block_kv)
    kv_seg = kv_seg_ref[:, pl.ds(kv_start, block_kv)]

    def compute(carry):
      acc, m, l = carry
      k = k_ref[pl.ds(kv_start, block_kv), :]
      v = v_ref[pl.ds(kv_start, block_kv), :]
      s = _dot(q, k, _NT, precision) * scale
      mask = _mask(q_start, kv_start, q_seg, kv_seg, causal, transposed=False)
      s = jnp.where(mask, s, MASK_VALUE)
      m_new = jnp.maximum(m, jnp.max(s, axis=1, keepdims=True))
      p = jnp.where(mask, jnp.exp(s - m_new), 0.0)
      alpha = jnp.exp(m - m_new)
      l = alpha * l + jnp.sum(p, axis=1, keepdims=True)
      acc = alpha * acc + _dot(p.astype(v.dtype), v, _NN, precision)
      return acc, m_new, l

    return _skip_unless_ids_meet(skip_empty, q_ids, kv_seg, compute, carry)

  num_kv = _causal_kv_blocks(q_start, block_q, block_kv, k_ref.shape[0] // block_kv, causal)
  init = (jnp.zeros((block_q, head_dim), jnp.float32),
          jnp.full((block_q, 1), MASK_VALUE, jnp.float32),
          jnp.zeros((block_q, 1), jnp.float32))
  acc, m, l = lax.fori_loop(0, num_kv, body, init)
  l_safe = jnp.where(l == 0.0, 1.0, l)  # rows that saw no key keep acc == 0
  o_ref[...] = (acc / l_safe).astype(o_ref.dtype)
  lse = m + jnp.log(l_safe)
  lse_ref[...] = _col_to_row(lse) if stats_rows else lse


def dq_kernel(q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, q_seg_ref, kv_seg_ref, dq_ref, *,
              scale, causal, block_kv, precision, skip_empty, stats_rows):
  """dQ for one query block: sum over key blocks of dS k, dS = P * (dO v^T - delta)."""
  block_q, head_dim = q_ref.shape
  q_start = pl.program_id(2) * block_q
  q = q_ref[...]
  do = do_ref[...]
  lse = lse_ref[...]      # [block_q, 1], or [1, block_q] with stats_rows
  delta = delta_ref[...]
  if stats_rows:
    lse, delta = _row_to_col(lse), _row_to_col(delta)
  q_seg = q_seg_ref[...]
  q_ids = _id_range(q_seg)

  def body(j, dq):
    kv_start = pl.multiple_of(j * block_kv, block_kv)
    kv_seg = kv_seg_ref[:, pl.ds(kv_start, block_kv)]

    def compute(dq):
      k = k_ref[pl.ds(kv_start, block_kv), :]
      v = v_ref[pl.ds(kv_start, block_kv), :]
      s = _dot(q, k, _NT, precision) * scale
      mask = _mask(q_start, kv_start, q_seg, kv_seg, causal, transposed=False)
      p = jnp.where(mask, jnp.exp(s - lse), 0.0)
      dp = _dot(do, v, _NT, precision)
      ds = p * (dp - delta)
      return dq + _dot(ds.astype(k.dtype), k, _NN, precision)

    return _skip_unless_ids_meet(skip_empty, q_ids, kv_seg, compute, dq)

  num_kv = _causal_kv_blocks(q_start, block_q, block_kv, k_ref.shape[0] // block_kv, causal)
  dq = lax.fori_loop(0, num_kv, body, jnp.zeros((block_q, head_dim), jnp.float32))
  dq_ref[...] = (dq * scale).astype(dq_ref.dtype)


def _q_rows(ref, rows, g, group_axis):
  """Rows of a q-side [q_len, d] operand in one indexing op (Triton lowers a single indexer).

  group_axis None: ref is [q_len, d]; 0: [group, q_len, d]; 1: [q_len, group, d] (head g).
  """
  if group_axis is None:
    return ref[rows, :]
  return ref[g, rows, :] if group_axis == 0 else ref[rows, g, :]


def _q_stat(ref, rows, g, group_axis):
  """A lane-dense [1, rows] slice of a per-query statistic: [1, q_len] or [group, 1, q_len]."""
  return ref[:, rows] if group_axis is None else ref[g, :, rows]


def dkv_one_head(q_ref, do_ref, lse_ref, delta_ref, q_seg_ref, g, k, v, kv_seg, kv_start, carry,
                 *, scale, causal, block_q, q_len, group_axis, precision, skip_empty):
  """Adds query head g's contribution to (dK, dV) of a key block, on transposed scores.

  k, v: [block_kv, head_dim] values; kv_seg: [block_kv, 1]; q_seg_ref: [1, q_len].
  """
  num_q = q_len // block_q
  # Causal: queries before this key block never see it.
  first = lax.div(kv_start, block_q) if causal else 0

  kv_ids = _id_range(kv_seg)

  def body(i, carry):
    q_start = pl.multiple_of(i * block_q, block_q)
    rows = pl.ds(q_start, block_q)
    q_seg = q_seg_ref[:, rows]

    def compute(carry):
      dk, dv = carry
      q = _q_rows(q_ref, rows, g, group_axis)
      do = _q_rows(do_ref, rows, g, group_axis)
      s_t = _dot(k, q, _NT, precision) * scale  # [block_kv, block_q]
      mask = _mask(kv_start, q_start, kv_seg, q_seg, causal, transposed=True)
      p_t = jnp.where(mask, jnp.exp(s_t - _q_stat(lse_ref, rows, g, group_axis)), 0.0)
      dv = dv + _dot(p_t.astype(do.dtype), do, _NN, precision)
      dp_t = _dot(v, do, _NT, precision)
      ds_t = p_t * (dp_t - _q_stat(delta_ref, rows, g, group_axis))
      dk = dk + _dot(ds_t.astype(q.dtype), q, _NN, precision)
      return dk, dv

    return _skip_unless_ids_meet(skip_empty, kv_ids, q_seg, compute, carry)

  return lax.fori_loop(first, num_q, body, carry)


def dkv_kernel(q_ref, do_ref, lse_ref, delta_ref, q_seg_ref, k_ref, v_ref, kv_seg_ref,
               dk_ref, dv_ref, *, scale, causal, block_q, precision, group_axis, group, skip_empty):
  """dK, dV (float32) for one key block of one KV head, summed over the query heads sharing it.

  group_axis None (Mosaic TPU): grid axis 3 walks the group's query heads sequentially and the
  f32 output block, resident across those steps, accumulates. Otherwise (Triton, interpret) the
  q-side refs hold the whole group (on `group_axis`) and the kernel loops over it, since a
  Triton grid is fully parallel.
  """
  block_kv, head_dim = k_ref.shape
  kv_start = pl.program_id(2) * block_kv
  q_len = q_seg_ref.shape[1]
  k = k_ref[...]
  v = v_ref[...]
  kv_seg = kv_seg_ref[...]
  zeros = jnp.zeros((block_kv, head_dim), jnp.float32)

  def one_head(g, carry):
    return dkv_one_head(q_ref, do_ref, lse_ref, delta_ref, q_seg_ref, g, k, v, kv_seg, kv_start,
                        carry, scale=scale, causal=causal, block_q=block_q, q_len=q_len,
                        group_axis=group_axis, precision=precision, skip_empty=skip_empty)

  if group_axis is None:
    dk, dv = one_head(None, (zeros, zeros))

    @pl.when(pl.program_id(3) == 0)
    def _():
      dk_ref[...] = jnp.zeros_like(dk_ref)
      dv_ref[...] = jnp.zeros_like(dv_ref)

    dk_ref[...] += dk * scale
    dv_ref[...] += dv
  else:
    dk, dv = lax.fori_loop(0, group, one_head, (zeros, zeros))
    dk_ref[...] = dk * scale
    dv_ref[...] = dv
