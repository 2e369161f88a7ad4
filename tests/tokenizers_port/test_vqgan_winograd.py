"""Winograd F(4x4, 3x3) against XLA's direct convolution (and a float64 numpy one)."""

import jax
import numpy as np
import pytest

from tokenizers_port.vqgan import winograd


def _direct64(x, w):
  x, w = x.astype(np.float64), w.astype(np.float64)
  b, h, wd, _ = x.shape
  xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return sum(np.einsum("bhwc,co->bhwo", xp[:, i:i + h, j:j + wd], w[i, j])
             for i in range(3) for j in range(3))


@pytest.mark.parametrize("shape", [(2, 16, 16, 32), (1, 13, 18, 24)])  # Ragged tiles too.
def test_matches_direct_convolution(shape):
  rng = np.random.default_rng(0)
  x = rng.standard_normal(shape).astype(np.float32)
  w = (rng.standard_normal((3, 3, shape[-1], 40)) / np.sqrt(9 * shape[-1])).astype(np.float32)
  bias = rng.standard_normal(40).astype(np.float32)
  with jax.default_matmul_precision("highest"):
    got = np.asarray(jax.jit(winograd.conv3x3)(x, w, bias))
    direct = np.asarray(jax.lax.conv_general_dilated(
        x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))) + bias
  want = _direct64(x, w) + bias
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, atol=2e-5, rtol=0)
  np.testing.assert_allclose(direct, want, atol=2e-5, rtol=0)
