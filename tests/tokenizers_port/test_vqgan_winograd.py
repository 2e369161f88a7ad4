"""Winograd F(mxm, 3x3) variants against XLA's direct convolution and a float64 numpy one."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tokenizers_port.vqgan import winograd
from tokenizers_port.vqgan.model import Conv3x3, cache_winograd_kernels

# Max abs error allowed against float64 for unit-variance outputs (direct conv: ~3e-6).
ATOL = {"f4": 2e-5, "f4a": 1e-5, "f2": 1e-5}


def _direct64(x, w):
  x, w = x.astype(np.float64), w.astype(np.float64)
  b, h, wd, _ = x.shape
  xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return sum(np.einsum("bhwc,co->bhwo", xp[:, i:i + h, j:j + wd], w[i, j])
             for i in range(3) for j in range(3))


def _case(shape, cout=40, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.standard_normal(shape).astype(np.float32)
  w = (rng.standard_normal((3, 3, shape[-1], cout)) / np.sqrt(9 * shape[-1])).astype(np.float32)
  return x, w, rng.standard_normal(cout).astype(np.float32)


def test_matrices_satisfy_the_winograd_identity():
  # A^T[(G g) * (B^T d)] is the 'valid' correlation of d with g, for any d and g.
  rng = np.random.default_rng(0)
  for at, g, bt in winograd.VARIANTS.values():
    m, n = at.shape
    d, k = rng.standard_normal(n), rng.standard_normal(3)
    want = np.array([d[i:i + 3] @ k for i in range(m)])
    np.testing.assert_allclose(at @ ((g @ k) * (bt @ d)), want, atol=1e-12)


@pytest.mark.parametrize("variant", sorted(winograd.VARIANTS))
@pytest.mark.parametrize("shape", [(2, 16, 16, 32), (1, 13, 18, 24)])  # Ragged tiles too.
def test_matches_direct_convolution(shape, variant):
  x, w, bias = _case(shape)
  with jax.default_matmul_precision("highest"):
    got = np.asarray(jax.jit(lambda *a: winograd.conv3x3(*a, variant=variant))(x, w, bias))
    direct = np.asarray(jax.lax.conv_general_dilated(
        x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))) + bias
  want = _direct64(x, w) + bias
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, atol=ATOL[variant], rtol=0)
  np.testing.assert_allclose(direct, want, atol=2e-5, rtol=0)


def test_accurate_points_beat_the_usual_ones():
  # Why "f4a" is the default: same multiply count as "f4", several times less rounding error.
  x, w, _ = _case((1, 16, 16, 128), cout=128, seed=1)
  want = _direct64(x, w)
  err = {v: np.abs(np.asarray(winograd.conv3x3(x, w, variant=v)) - want).max()
         for v in ("f4", "f4a")}
  assert err["f4a"] * 2 < err["f4"], err


@pytest.mark.slow  # the per-shape Winograd checks stay
@pytest.mark.parametrize("impl", ["winograd", "winograd-f2"])
def test_cached_kernel_layer_matches_direct_layer(impl):
  x, _, _ = _case((2, 12, 12, 32))
  fast = Conv3x3(32, 24, nnx.Rngs(0), jnp.float32, impl)
  direct = Conv3x3(32, 24, nnx.Rngs(0), jnp.float32, "direct")
  fast.bias[...] = direct.bias[...] = jnp.linspace(-1, 1, 24)
  on_the_fly = np.asarray(fast(x))
  cache_winograd_kernels(fast)
  assert fast.winograd_kernel is not None and fast.winograd_kernel.shape[1:] == (32, 24)
  cached = np.asarray(nnx.jit(lambda m, x: m(x))(fast, x))
  np.testing.assert_allclose(cached, on_the_fly, atol=1e-5, rtol=0)  # jit vs eager rounding
  np.testing.assert_allclose(cached, np.asarray(direct(x)), atol=2e-5, rtol=0)
