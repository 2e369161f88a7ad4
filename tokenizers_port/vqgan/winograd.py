"""3x3 stride-1 convolution by Winograd F(mxm, 3x3) (Lavin & Gray, 2016), for CPU throughput.

An m x m output tile costs (m+2)^2 multiplies per channel pair instead of 9 m^2: the input is cut
into overlapping (m+2)^2 tiles and transformed (B^T d B), the kernel likewise (G g G^T), the two
are multiplied channel-wise as (m+2)^2 independent matmuls, and A^T M A gives the outputs.

Variants (`VARIANTS`), with the max float32 error of one 3x3 conv (256 channels, unit-variance
in/out) against float64, where XLA's direct conv gives ~3e-6:
  "f4":  F(4x4, 3x3) on the usual points 0, +-1, +-2; 4x fewer multiplies; ~5e-5.
  "f4a": F(4x4, 3x3) on 0, +-3/2, +-2/3; same cost; ~1e-5 (the lowest of a search over small
         rational point sets). The default.
  "f2":  F(2x2, 3x3); 2.25x fewer multiplies; ~3e-6.
On the full f16 encoders all three stay as close to the PyTorch reference as the direct conv
(there the reference's own float32 rounding dominates).
"""

from fractions import Fraction

import jax.numpy as jnp
import numpy as np


def toom_cook(m: int, points) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """F(m, 3) matrices (A^T [m, n], G [n, 3], B^T [n, n]) from n-1 finite points plus infinity."""
  r, a = 3, [Fraction(p) for p in points]
  n = m + r - 1
  assert len(a) == n - 1, (m, points)
  at = [[p ** i for p in a] + [Fraction(int(i == m - 1))] for i in range(m)]
  f = [np.prod([a[j] - a[k] for k in range(n - 1) if k != j]) for j in range(n - 1)]
  g = [[a[j] ** k / f[j] for k in range(r)] for j in range(n - 1)]
  g.append([Fraction(int(k == r - 1)) for k in range(r)])
  at, g = np.array(at, np.float64), np.array(g, np.float64)
  # B^T is fixed by the identity A^T[(G g) * (B^T d)] == correlation(d, g): linear in B^T,
  # one small exact system per column (12 equations, n unknowns).
  lhs = np.einsum("ij,jk->ikj", at, g).reshape(m * r, n)
  bt = np.stack([np.linalg.lstsq(lhs, np.eye(n)[[i + k for i in range(m) for k in range(r)], l],
                                 rcond=None)[0] for l in range(n)], axis=1)
  bt = np.array([[float(Fraction(c).limit_denominator(64)) for c in row] for row in bt])
  assert np.allclose(lhs @ bt, [[float(l == i + k) for l in range(n)] for i in range(m)
                                for k in range(r)], atol=1e-12), points
  return at, g, bt


VARIANTS = {
    "f4": toom_cook(4, (0, 1, -1, 2, -2)),
    "f4a": toom_cook(4, (0, Fraction(3, 2), Fraction(-3, 2), Fraction(2, 3), Fraction(-2, 3))),
    "f2": toom_cook(2, (0, 1, -1)),
}
DEFAULT = "f4a"


def _combine(coeffs, terms):
  """sum_i coeffs[i] * terms[i], skipping zeros and multiplying only where needed."""
  out = None
  for c, t in zip(coeffs, terms):
    if c == 0:
      continue
    t = t if c == 1 else (-t if c == -1 else t * float(c))
    out = t if out is None else out + t
  return out


def transform_kernel(w, variant=DEFAULT):
  """HWIO 3x3 kernel -> [n*n, I, O] Winograd-domain kernel, as elementwise sums (a contraction
  over the 3-long tap axes would be lowered to K=3 matmuls plus transposes, far slower)."""
  g = VARIANTS[variant][1]
  n = g.shape[0]
  rows = [_combine(g[u], [w[i] for i in range(3)]) for u in range(n)]   # n x [3, I, O]
  return jnp.stack([_combine(g[v], [r[j] for j in range(3)]) for r in rows for v in range(n)])


def conv3x3(x, w, bias=None, variant=DEFAULT, u=None):
  """Same as a 3x3 conv with padding 1 and stride 1: x [B, H, W, C], w HWIO [3, 3, C, O];
  or pass `u = transform_kernel(w, variant)` precomputed instead of w."""
  at, _, bt = VARIANTS[variant]
  m, n = at.shape
  b, h, wd, c = x.shape
  th, tw = -(-h // m), -(-wd // m)
  xp = jnp.pad(x, ((0, 0), (1, m * th - h + 1), (1, m * tw - wd + 1), (0, 0)))
  # Separable transform, one stacked pass per axis: n-operand concatenates fuse with their
  # operands, where one n*n-operand stack left n*n separate passes plus a copy.
  rows = [xp[:, i:i + m * th:m] for i in range(n)]                  # n x [B, th, Wp, C]
  r = jnp.stack([_combine(bt[u], rows) for u in range(n)])         # [n, B, th, Wp, C]
  cols = [r[:, :, :, j:j + m * tw:m] for j in range(n)]             # n x [n, B, th, tw, C]
  v = jnp.stack([_combine(bt[k], cols) for k in range(n)], axis=1)  # [n, n, B, th, tw, C]
  # The batch axis stays separate so a batch sharded over a mesh needs no resharding.
  u = (transform_kernel(w, variant) if u is None else u).astype(x.dtype)
  mm = jnp.einsum("pbhwc,pco->pbhwo", v.reshape(n * n, b, th, tw, c), u)
  mm = mm.reshape(n, n, b, th, tw, -1)
  ro = [_combine(at[a], [mm[i] for i in range(n)]) for a in range(m)]   # m x [n, B, th, tw, O]
  y = jnp.stack([jnp.stack([_combine(at[k], [r_[j] for j in range(n)]) for k in range(m)], axis=3)
                 for r_ in ro], axis=2)                                  # [B, th, m, tw, m, O]
  y = y.reshape(b, m * th, m * tw, -1)[:, :h, :wd]
  return y if bias is None else y + bias
