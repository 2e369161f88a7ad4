"""The Triton lowering of the kernels, exported for CUDA from this CPU host.

`jax.export` runs the Pallas -> Triton IR lowering (which rejects non-power-of-two tiles, stacked
ref indexers and other things interpret mode accepts) without a GPU. It does not run Triton's
own compiler to PTX; that needs a GPU (see docs/attention_kernels.md).
"""

import jax
import jax.numpy as jnp
from jax import export

from mio_jax.kernels.block_sizes import default_block_sizes
from mio_jax.kernels.flash_gpu import flash_attention_gpu


def test_forward_and_backward_lower_to_triton_for_cuda():
  b, t, heads, kv_heads, head_dim = 2, 1000, 8, 2, 96  # ragged length, GQA 4, head_dim padded to 128
  blocks = default_block_sizes("gpu")

  def grads(q, k, v, seg):
    loss = lambda q, k, v: flash_attention_gpu(q, k, v, seg, seg, causal=True, blocks=blocks).astype(
        jnp.float32).sum()
    return jax.grad(loss, argnums=(0, 1, 2))(q, k, v)

  args = (jax.ShapeDtypeStruct((b, t, heads, head_dim), jnp.bfloat16),
          jax.ShapeDtypeStruct((b, t, kv_heads, head_dim), jnp.bfloat16),
          jax.ShapeDtypeStruct((b, t, kv_heads, head_dim), jnp.bfloat16),
          jax.ShapeDtypeStruct((b, t), jnp.int32))
  exported = export.export(
      jax.jit(grads), platforms=["cuda"],
      disabled_checks=[export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")])(*args)
  # forward (recomputed for the residuals), dQ and dK/dV kernels
  assert exported.mlir_module().count("__gpu$xla.gpu.triton") == 3
