"""Registration with the attention dispatch, block-size configuration, and the cuDNN guard."""

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from kernel_helpers import FAST_COMPILE, make_qkv, packed_segments
from mio_jax.kernels.block_sizes import BlockSizes, block_sizes_from_config, default_block_sizes
from mio_jax.kernels.cudnn import CudnnMaskError
from mio_jax.kernels.flash_attention import fit_blocks
from mio_jax.model.attention import attention, available_impls, resolve_impl


def test_every_kernel_is_offered_and_auto_picks_per_backend():
  assert {"pallas", "splash", "cudnn", "xla"} <= set(available_impls())
  assert resolve_impl("auto", "tpu") == "splash"
  assert resolve_impl("auto", "gpu") == "pallas"
  assert resolve_impl("auto", "cpu") == "xla"


def test_pallas_impl_runs_in_interpret_mode_on_cpu():
  q, k, v = make_qkv(0, 1, 40, 40, 4, 2, 64)
  seg = packed_segments([[25, 10]], 40)
  run = lambda impl: jax.jit(lambda q, k, v: attention(
      q, k, v, seg, causal=True, impl=impl, blocks=BlockSizes(16, 16, 16, 16))).lower(
          q, k, v).compile(compiler_options=FAST_COMPILE)(q, k, v)
  with jax.default_matmul_precision("highest"):
    got, want = run("pallas"), run("xla")
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)


def test_cudnn_refuses_segment_ids_instead_of_dropping_them():
  q, k, v = make_qkv(0, 1, 32, 32, 2, 2, 64)
  seg = packed_segments([[16, 16]], 32)
  with pytest.raises(CudnnMaskError, match="cannot apply segment ids"):
    attention(q, k, v, seg, causal=True, impl="cudnn")
  with pytest.raises(CudnnMaskError, match="cannot apply segment ids"):  # traced ids: unprovable
    jax.jit(lambda s: attention(q, k, v, s, causal=True, impl="cudnn"))(jnp.ones((1, 32), jnp.int32))
  ones = jnp.ones((1, 32), jnp.int32)
  with pytest.raises(CudnnMaskError, match="cannot apply segment ids"):  # q and kv ids differ
    attention(q, k, v, (ones, 2 * ones), causal=True, impl="cudnn")
  with pytest.raises(CudnnMaskError, match="needs an NVIDIA GPU"):  # one segment, but on CPU
    attention(q, k, v, jnp.ones((1, 32), jnp.int32), causal=True, impl="cudnn")


def test_block_sizes_from_config_overrides_backend_default():
  config = ml_collections.ConfigDict({"model": {"attention_blocks": {"block_q": 256}}})
  blocks = block_sizes_from_config(config, "tpu")
  assert blocks == dataclasses.replace(default_block_sizes("tpu"), block_q=256)
  assert block_sizes_from_config(ml_collections.ConfigDict({"model": {}}), "gpu") == \
      default_block_sizes("gpu")


def test_the_model_passes_its_kernel_tiles_and_target_down():
  """The blocks and backend a model is built with reach the kernel (no module state): blocks that
  are not a power of two would be refused there, so a model built with them fails when traced."""
  from flax import nnx
  from mio_jax.model.attention import AttentionKernel
  from mio_jax.model.transformer import ModelConfig, Transformer

  cfg = ModelConfig(vocab_size=32, embed_dim=16, num_layers=1, num_heads=2, num_kv_heads=1,
                    head_dim=8, mlp_dim=32, dtype="float32", remat_policy="none")
  ids = jnp.ones((1, 32), jnp.int32)
  pos = jnp.arange(32)[None]
  seen = []

  def spy(q, k, v, qs, ks, *, causal, backend, blocks):
    seen.append((backend, blocks))
    return q

  from mio_jax.model import attention as attention_lib
  blocks = BlockSizes(16, 16, 16, 16)
  orig = attention_lib._REFERENCE["xla"]
  attention_lib._REFERENCE["xla"] = spy
  try:
    model = Transformer(cfg, rngs=nnx.Rngs(0), kernel=AttentionKernel("xla", "tpu", blocks))
    model(ids, ids, pos)
  finally:
    attention_lib._REFERENCE["xla"] = orig
  assert seen == [("tpu", blocks)]
  assert Transformer(cfg, rngs=nnx.Rngs(0)).blocks.attn.kernel == AttentionKernel("xla", "cpu", None)


def test_bad_block_config_names_the_key():
  bad_key = ml_collections.ConfigDict({"model": {"attention_blocks": {"block_k": 64}}})
  with pytest.raises(ValueError, match=r"attention_blocks: unknown keys \['block_k'\]"):
    block_sizes_from_config(bad_key, "gpu")
  with pytest.raises(ValueError, match=r"attention_blocks.block_kv=96 must be a power of two"):
    BlockSizes(block_q=64, block_kv=96, block_q_bwd=64, block_kv_bwd=64)
  with pytest.raises(ValueError, match=r"attention_blocks.block_q=64 must be a multiple of 128"):
    fit_blocks(BlockSizes(64, 128, 128, 128), 1024, 1024, min_block=128)


def test_fit_blocks_shrinks_to_short_sequences_and_pads_little():
  blocks = lambda f: (f.block_q, f.block_kv, f.block_q_bwd, f.block_kv_bwd)
  # 100 queries: one 128 block; 300 keys: 384 with 128-row blocks (512 with 256 or 512).
  assert blocks(fit_blocks(default_block_sizes("tpu"), 100, 300, min_block=128)) == (128, 128, 128, 128)
  # MIO's 2800 tokens: 512-row blocks pad to 3072 (+9.7%), 256 to 2816 (+0.6%).
  assert blocks(fit_blocks(default_block_sizes("tpu"), 2800, 2800, min_block=128)) == (256, 256, 256, 256)
  # 4096 needs no padding: the tuned blocks stay.
  assert fit_blocks(default_block_sizes("tpu"), 4096, 4096, min_block=128) == default_block_sizes("tpu")
  # 20 pads to 32 with 32 or 16: the larger block is kept.
  assert fit_blocks(BlockSizes(64, 64, 64, 64), 20, 20, min_block=16).block_q == 32


def test_a_kernel_that_cannot_run_is_one_line_before_compiling(monkeypatch, caplog):
  from mio_jax.model import attention as attention_lib
  from mio_jax.model.attention import AttentionUnavailable, KERNELS, check_impl

  assert check_impl("splash", "tpu") == "splash" and check_impl("auto", "gpu") == "pallas"
  with pytest.raises(AttentionUnavailable, match=r"^config.model.attention_impl='cudnn' cannot run on tpu "
                                                 r"\(it runs on gpu\)$"):
    check_impl("cudnn", "tpu")
  with pytest.raises(AttentionUnavailable, match=r"^config.model.attention_impl='splash' cannot run on gpu"):
    check_impl("splash", "gpu")
  # A kernel whose module cannot be imported: named with the import error, never silently replaced.
  monkeypatch.setitem(KERNELS, "splash", ("mio_jax.kernels.no_such_module", "f", ("tpu",)))
  with pytest.raises(AttentionUnavailable, match=r"^config.model.attention_impl='splash': attention "
                                                 r"implementation 'splash' cannot be imported"):
    check_impl("splash", "tpu")
  attention_lib._log_auto_choice.cache_clear()
  with caplog.at_level("INFO", logger="mio_jax.model"):
    assert resolve_impl("auto", "tpu") == "pallas"  # the next in line, saying why
  assert "attention impl 'auto' on tpu: skipped, attention implementation 'splash' cannot be imported" in caplog.text
  assert "attention impl 'auto' on tpu: pallas" in caplog.text


class _FakeGpu:
  """What validate reads of a device: one GPU node of 8."""
  platform, device_kind, process_index = "gpu", "NVIDIA H100", 0

  def __init__(self, i):
    self.id = i
    self.slice_index = 0


def test_config_validation_checks_the_kernel_against_the_devices():
  from configs.base import stage_config
  from mio_jax.train.validate import ConfigError, validate

  c = stage_config(2, "smoke")
  c.model.attention_impl = "splash"
  with pytest.raises(ConfigError, match=r"^config.model.attention_impl='splash' cannot run on gpu"):
    validate(c, [_FakeGpu(i) for i in range(8)])
  c.model.attention_impl = "cudnn"  # would run on a GPU, but cannot train on packed rows anywhere
  with pytest.raises(ConfigError, match=r"^config.model.attention_impl='cudnn' cannot train"):
    validate(c, jax.devices())
  c.model.attention_impl = "splash"  # interpret mode on CPU
  validate(c, jax.devices())


def test_kernels_import_nothing_of_the_model():
  import subprocess
  import sys

  code = "import sys, mio_jax.kernels; print(sorted(m for m in sys.modules if m.startswith('mio_jax.model')))"
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "[]"
