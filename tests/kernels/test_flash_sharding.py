"""The kernels' shard_map wrapping on 8 CPU devices (mesh data=2, fsdp=2, tensor=2), in
interpret mode, against the XLA reference."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from kernel_helpers import FAST_COMPILE, assert_matches_reference, make_qkv, packed_segments
from mio_jax.kernels.block_sizes import BlockSizes
from mio_jax.kernels.flash_gpu import flash_attention_gpu
from mio_jax.kernels.flash_tpu import flash_attention_tpu
from mio_jax.kernels.splash import splash_attention
from mio_jax.model.attention import xla_attention

F32_ATOL = 1e-4


@pytest.fixture(scope="module")
def mesh():
  if len(jax.devices()) < 8:
    pytest.skip("needs the 8 forced host devices from tests/conftest.py")
  return Mesh(np.array(jax.devices()[:8]).reshape(2, 2, 2), ("data", "fsdp", "tensor"))


def _sharded_inputs(mesh, t, heads, kv_heads, head_dim, lengths):
  q, k, v = make_qkv(11, 4, t, t, heads, kv_heads, head_dim)
  seg = packed_segments(lengths, t)
  qkv_sh = NamedSharding(mesh, P(("data", "fsdp"), None, "tensor", None))
  seg_sh = NamedSharding(mesh, P(("data", "fsdp"), None))
  return [jax.device_put(x, qkv_sh) for x in (q, k, v)] + [jax.device_put(seg, seg_sh)]


@pytest.mark.parametrize("flash", [flash_attention_tpu, flash_attention_gpu])
def test_flash_under_mesh_matches_reference(mesh, flash):
  q, k, v, seg = _sharded_inputs(mesh, 72, 4, 2, 64, [[30, 40], [72], [10, 10, 10], [50]])
  blocks = BlockSizes(block_q=32, block_kv=32, block_q_bwd=32, block_kv_bwd=32)
  fn = functools.partial(flash, blocks=blocks, interpret=True)
  with jax.set_mesh(mesh):
    jaxpr = str(jax.make_jaxpr(functools.partial(fn, causal=True))(q, k, v, seg, seg))
    assert "shard_map" in jaxpr  # it really ran per shard
    assert_matches_reference(fn, q, k, v, seg, seg, True, atol=F32_ATOL)


def test_flash_tpu_without_mesh_calls_directly():
  q, k, v = make_qkv(12, 1, 32, 32, 2, 1, 64)
  seg = jnp.ones((1, 32), jnp.int32)
  fn = functools.partial(flash_attention_tpu, causal=True,
                         blocks=BlockSizes(32, 32, 32, 32), interpret=True)
  assert "shard_map" not in str(jax.make_jaxpr(fn)(q, k, v, seg, seg))


def test_splash_under_mesh_matches_reference(mesh):
  """jax's splash kernel (interpret mode) behind our wrapper: padding 100 -> 128, GQA, segments."""
  q, k, v, seg = _sharded_inputs(mesh, 100, 4, 2, 64, [[60, 40], [100], [1, 99], [30]])
  blocks = BlockSizes(block_q=128, block_kv=128, block_q_bwd=128, block_kv_bwd=128)
  fn = functools.partial(splash_attention, blocks=blocks, interpret=True)
  with jax.set_mesh(mesh):
    assert_matches_reference(fn, q, k, v, seg, seg, True, atol=F32_ATOL)


def test_kv_heads_not_divisible_by_tensor_axis_is_a_clear_error(mesh):
  q, k, v = make_qkv(13, 4, 32, 32, 4, 1, 64)  # one KV head cannot split over tensor=2
  seg = jnp.ones((4, 32), jnp.int32)
  fn = functools.partial(flash_attention_tpu, causal=True, blocks=BlockSizes(32, 32, 32, 32),
                         interpret=True)
  with jax.set_mesh(mesh), pytest.raises(ValueError, match="num_kv_heads=1 is not divisible"):
    jax.eval_shape(fn, q, k, v, seg, seg)


def test_batch_not_divisible_by_batch_axes_is_replicated(mesh):
  """One sequence (as in generation) on a data x fsdp = 4 mesh still gives the reference result."""
  q, k, v = make_qkv(14, 1, 40, 40, 2, 2, 64)
  seg = packed_segments([[25, 15]], 40)
  fn = functools.partial(flash_attention_tpu, blocks=BlockSizes(64, 64, 64, 64), interpret=True)
  with jax.set_mesh(mesh), jax.default_matmul_precision("highest"):
    step = jax.jit(lambda q, k, v: fn(q, k, v, seg, seg, causal=True))
    got = step.lower(q, k, v).compile(compiler_options=FAST_COMPILE)(q, k, v)
    want = xla_attention(q, k, v, seg, seg, causal=True)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)
