"""Lloyd's k-means for fitting codebooks to features (reference calibration, tiny tokenizers)."""

import numpy as np


def nearest(x: np.ndarray, codes: np.ndarray) -> np.ndarray:
  """Index of the nearest row of `codes` [K, D] for each row of `x` [N, D] (first on ties)."""
  return ((codes ** 2).sum(1)[None] - 2 * x @ codes.T).argmin(1)


def kmeans(x: np.ndarray, k: int, iters: int, rng: np.random.Generator) -> np.ndarray:
  """k centres [k, D]: Forgy seeding (k distinct rows), then `iters` Lloyd steps; an empty
  cluster keeps its centre. With no more rows than k: the rows plus noisy copies, spread 0.3 std
  so that no two tie."""
  n = x.shape[0]
  if n <= k:
    picks = np.concatenate([np.arange(n), rng.integers(0, n, size=k - n)])
    return x[picks] + 0.3 * x.std(0, keepdims=True) * rng.standard_normal((k, x.shape[1]))
  codes = x[rng.choice(n, size=k, replace=False)].copy()
  for _ in range(iters):
    idx = nearest(x, codes)
    counts = np.bincount(idx, minlength=k)
    sums = np.zeros_like(codes)
    np.add.at(sums, idx, x)
    filled = counts > 0
    codes[filled] = sums[filled] / counts[filled, None]
  return codes
