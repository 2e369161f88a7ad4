"""Ahead-of-time compiles for a TPU topology from this CPU host (as MaxText's train_compile does).

Interpret mode does not enforce Mosaic's (8, 128) tiling or VMEM rules; compiling for a real
topology through libtpu does (a block of 16 fails here with a Mosaic layout error). Skipped where
libtpu is not installed (`pip install "libtpu==0.0.42.*"`, the pin of jax[tpu] 0.10.2).
"""

import importlib.util
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

pytestmark = pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                                reason="libtpu is not installed")

from mio_jax.kernels.block_sizes import default_block_sizes  # noqa: E402
from mio_jax.kernels.flash_tpu import flash_attention_tpu  # noqa: E402


@pytest.fixture(scope="module")
def v5e_mesh():
  # Several users' processes may hold libtpu's lock file; topology-only use needs no exclusivity.
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  from jax.experimental import topologies
  topo = topologies.get_topology_desc("v5e:2x2", "tpu")
  # The persistent compilation cache cannot load TPU executables without a TPU client.
  cache_was_on = jax.config.jax_enable_compilation_cache
  jax.config.update("jax_enable_compilation_cache", False)
  yield Mesh(np.array(topo.devices).reshape(1, 2, 2), ("data", "fsdp", "tensor"))
  jax.config.update("jax_enable_compilation_cache", cache_was_on)


def _abstract(shape, dtype, mesh, spec):
  return jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(mesh, spec))


@pytest.mark.parametrize("dtype,head_dim", [
    (jnp.bfloat16, 128), pytest.param(jnp.float32, 64, marks=pytest.mark.slow)])
def test_flash_kernel_forward_and_backward_compile_for_v5e(v5e_mesh, dtype, head_dim):
  b, t, heads, kv_heads = 4, 1000, 8, 2  # 1000: padded inside to the 512-row blocks
  qkv = P(("data", "fsdp"), None, "tensor", None)
  args = (_abstract((b, t, heads, head_dim), dtype, v5e_mesh, qkv),
          _abstract((b, t, kv_heads, head_dim), dtype, v5e_mesh, qkv),
          _abstract((b, t, kv_heads, head_dim), dtype, v5e_mesh, qkv),
          _abstract((b, t), jnp.int32, v5e_mesh, P(("data", "fsdp"), None)))
  blocks = default_block_sizes("tpu")

  def loss(q, k, v, seg):
    out = flash_attention_tpu(q, k, v, seg, seg, causal=True, blocks=blocks)
    return out.astype(jnp.float32).sum()

  with jax.set_mesh(v5e_mesh):
    compiled = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(*args).compile()
  hlo = compiled.as_text()
  # forward, dQ and dK/dV kernels, each compiled by Mosaic for the TPU
  assert hlo.count('custom_call_target="tpu_custom_call"') == 3
  # the log-sum-exp residual is lane-dense [b, h, 1, seq], not a 128x lane-padded [b, h, seq, 1]
  assert "f32[2,4,1,1024]" in hlo and "f32[2,4,1024,1]" not in hlo  # per shard: b 2, heads 4


@pytest.mark.slow  # about a minute each on 2 cores; the kernel compile above covers the kernels
@pytest.mark.parametrize("impl", ["pallas", "splash"])
def test_train_step_compiles_for_v5e(v5e_mesh, impl):
  from mio_jax.model.transformer import ModelConfig
  from mio_jax.parallel.rules import activation_sharding, batch_spec, get_rules
  from mio_jax.train.state import TrainState, init_params, make_optimizer, model_graphdef_and_axes
  from mio_jax.train.state import state_shardings
  from mio_jax.train.step import BATCH_KEYS, make_train_step

  model_cfg = ModelConfig(vocab_size=1024, embed_dim=256, num_layers=2, num_heads=8,
                          num_kv_heads=2, head_dim=128, mlp_dim=512, attention_impl=impl)
  opt = ml_collections.ConfigDict(dict(peak_lr=1e-3, warmup_fraction=0.1, final_lr_fraction=0.1,
                                       b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1, clip_norm=1.0,
                                       schedule="warmup_cosine", decay_fraction=0.0))
  tx, schedule = make_optimizer(opt, 100)
  rules = get_rules("fsdp")
  from mio_jax.model.attention import AttentionKernel
  graphdef, _, axes = model_graphdef_and_axes(model_cfg, AttentionKernel(impl, "tpu"))

  def init():
    params = init_params(model_cfg, 0)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

  abstract = jax.eval_shape(init)
  shardings = state_shardings(v5e_mesh, rules, axes, tx, abstract)
  state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                       abstract, shardings)
  batch_sh = NamedSharding(v5e_mesh, batch_spec())
  batch = {k: jax.ShapeDtypeStruct((8, 512), jnp.int32, sharding=batch_sh) for k in BATCH_KEYS}
  batch["loss_mask"] = jax.ShapeDtypeStruct((8, 512), jnp.float32, sharding=batch_sh)
  step = make_train_step(graphdef, tx, schedule, modality_ranges={"text": (0, 1024)})
  with jax.set_mesh(v5e_mesh), activation_sharding(v5e_mesh, rules):
    compiled = jax.jit(step, in_shardings=(shardings, batch_sh),
                       out_shardings=(shardings, None)).lower(state, batch).compile()
  # the attention kernels are in the step
  assert compiled.as_text().count('custom_call_target="tpu_custom_call"') >= 3
