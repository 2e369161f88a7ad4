"""Pallas flash attention in interpret mode against the XLA reference: forward and gradients."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental.pallas import tpu as pltpu

from kernel_helpers import assert_matches_reference, make_qkv, out_and_grads, packed_segments
from mio_jax.kernels.block_sizes import BlockSizes
from mio_jax.kernels.flash_attention import flash_attention
from mio_jax.kernels.flash_gpu import INTERPRET
from mio_jax.kernels.flash_tpu import TPU_INTERPRET

SMALL = BlockSizes(block_q=32, block_kv=16, block_q_bwd=16, block_kv_bwd=32)
# bf16 inputs: the kernel rounds P to bf16 before P @ V (as every flash kernel does) while the
# reference rounds the normalised probabilities; measured differences are below 5e-3 of the
# largest magnitude (docs/attention_kernels.md), the bound leaves 4x room. f32 agrees to 1e-4.
BF16_ATOL = 2e-2
F32_ATOL = 1e-4


def kernel(lowering=INTERPRET, blocks=SMALL):
  return functools.partial(flash_attention, lowering=lowering, blocks=blocks)


# GQA 4 runs by default; MHA and MQA (~2.7 s each in interpret mode on 2 cores) in the slow set.
@pytest.mark.parametrize("heads,kv_heads,head_dim,causal", [
    pytest.param(2, 2, 64, True, marks=pytest.mark.slow),    # MHA
    (8, 2, 64, False),   # GQA 4
    pytest.param(8, 1, 128, True, marks=pytest.mark.slow),   # GQA 8 (MQA)
])
def test_f32_matches_reference_with_packed_segments(heads, kv_heads, head_dim, causal):
  t = 70  # not a multiple of any block
  q, k, v = make_qkv(0, 2, t, t, heads, kv_heads, head_dim)
  seg = packed_segments([[30, 35], [70]], t)  # row 0 ends with 5 padding tokens
  assert_matches_reference(kernel(), q, k, v, seg, seg, causal, atol=F32_ATOL)


def test_f32_without_segments_and_different_q_kv_lengths():
  q, k, v = make_qkv(1, 1, 40, 72, 4, 2, 64)
  ones = lambda n: jnp.ones((1, n), jnp.int32)
  assert_matches_reference(kernel(), q, k, v, ones(40), ones(72), False, atol=F32_ATOL)


@pytest.mark.slow  # the f32 cases stay
def test_bf16_matches_reference_within_documented_bound():
  t = 100
  q, k, v = make_qkv(2, 2, t, t, 8, 2, 256, jnp.bfloat16)  # also the largest head_dim
  seg = packed_segments([[20, 50, 25], [100]], t)
  assert_matches_reference(kernel(), q, k, v, seg, seg, True, atol=BF16_ATOL)


@pytest.mark.parametrize("tpu_interpreter", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_tpu_grid_variant_matches_reference(tpu_interpreter):
  """The Mosaic TPU layout (heads-major, dK/dV accumulated over a sequential group axis, lane-dense
  statistics), in the generic interpreter and (slow) in Pallas's TPU interpreter, which also
  models TPU memory spaces and DMAs."""
  lowering = TPU_INTERPRET
  if tpu_interpreter:
    lowering = dataclasses.replace(lowering, interpret=pltpu.InterpretParams())
  t = 70
  q, k, v = make_qkv(3, 2, t, t, 8, 2, 64)
  seg = packed_segments([[30, 35], [10, 60]], t)
  assert_matches_reference(kernel(lowering), q, k, v, seg, seg, True, atol=F32_ATOL)


def test_head_dim_padding_to_power_of_two():
  """Triton pads head_dim 96 to 128 inside; zero columns must not change the result."""
  lowering = dataclasses.replace(INTERPRET, pad_head_dim_pow2=True)
  q, k, v = make_qkv(4, 1, 48, 48, 4, 4, 96)
  seg = packed_segments([[20, 28]], 48)
  assert_matches_reference(kernel(lowering), q, k, v, seg, seg, True, atol=F32_ATOL)


def test_packing_invariance():
  """Changing one packed sample leaves the other samples' outputs and gradients unchanged."""
  t = 64
  q, k, v = make_qkv(5, 1, t, t, 4, 2, 64)
  seg = packed_segments([[20, 30]], t)  # sample 1: 0..19, sample 2: 20..49, padding 50..63
  other = slice(20, 50)
  q2, k2, v2 = make_qkv(6, 1, t, t, 4, 2, 64)
  q_b = q.at[:, other].set(q2[:, other])
  k_b = k.at[:, other].set(k2[:, other])
  v_b = v.at[:, other].set(v2[:, other])
  fn = kernel()
  out_a, grads_a = out_and_grads(fn, q, k, v, seg, seg, True)
  out_b, grads_b = out_and_grads(fn, q_b, k_b, v_b, seg, seg, True)
  kept = np.r_[0:20, 50:64]
  for a, b in zip((out_a, *grads_a), (out_b, *grads_b)):
    np.testing.assert_array_equal(np.asarray(a)[:, kept], np.asarray(b)[:, kept])
  # And the changed sample did change (the test can fail).
  assert not np.allclose(np.asarray(out_a)[:, other], np.asarray(out_b)[:, other])


def test_rows_without_visible_keys_are_zero_not_nan():
  """Query rows whose segment id has no key give zero output and zero, finite gradients."""
  q, k, v = make_qkv(7, 1, 48, 48, 2, 2, 64)
  q_seg = packed_segments([[16, 16, 16]], 48)             # ids 1, 2, 3
  kv_seg = jnp.where(q_seg == 3, 0, q_seg)                # no key carries id 3
  # Also checks every output and gradient is finite.
  out, grads = assert_matches_reference(kernel(), q, k, v, q_seg, kv_seg, False, atol=F32_ATOL)
  out = np.asarray(out)
  np.testing.assert_array_equal(out[:, 32:], 0.0)
  np.testing.assert_array_equal(np.asarray(grads[0])[:, 32:], 0.0)
  assert np.abs(out[:, :32]).max() > 0.1


@pytest.mark.parametrize("skip", [True, False])
def test_tiles_of_disjoint_samples_are_skipped(skip):
  """With samples filling whole tiles, a tile pairing two samples is never touched: NaN values in
  sample 2 reach sample 1's rows only if that tile is computed (0 * NaN in P @ V)."""
  t = 64
  q, k, v = make_qkv(8, 1, t, t, 2, 2, 64)
  seg = packed_segments([[32, 32]], t)
  v = v.at[:, 32:].set(jnp.nan)
  blocks = dataclasses.replace(BlockSizes(32, 32, 32, 32), skip_empty_blocks=skip)
  out = np.asarray(jax.jit(lambda q, k, v: kernel(blocks=blocks)(
      q, k, v, seg, seg, causal=False))(q, k, v))
  assert np.isnan(out[:, 32:]).all()
  assert np.isfinite(out[:, :32]).all() == skip
