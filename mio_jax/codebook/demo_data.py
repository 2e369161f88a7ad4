"""Gaussian blobs as embedding files, to try the fit without a SigLIP run:

  python -m mio_jax.codebook.demo_data OUT [--points 8192 --dim 64 --centres 64 --files 4 --seed 0]

writes OUT/part-00000.npy ... : float32 [n_i, dim], points around `centres` random centres
(unit-normal centres, each blob's spread drawn in [0.1, 0.3]), shuffled, split over `files`.
"""

from __future__ import annotations

import argparse
import os

import numpy as np


def blobs(points: int, dim: int, centres: int, seed: int = 0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  means = rng.standard_normal((centres, dim))
  spread = rng.uniform(0.1, 0.3, centres)
  which = rng.integers(0, centres, points)
  return (means[which] + spread[which, None] * rng.standard_normal((points, dim))).astype(np.float32)


def write_files(out: str, points: np.ndarray, files: int) -> list[str]:
  os.makedirs(out, exist_ok=True)
  paths = []
  for i, part in enumerate(np.array_split(points, files)):
    paths.append(os.path.join(out, f"part-{i:05d}.npy"))
    np.save(paths[-1], part)
  return paths


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("out")
  p.add_argument("--points", type=int, default=8192)
  p.add_argument("--dim", type=int, default=64)
  p.add_argument("--centres", type=int, default=64)
  p.add_argument("--files", type=int, default=4)
  p.add_argument("--seed", type=int, default=0)
  a = p.parse_args(argv)
  paths = write_files(a.out, blobs(a.points, a.dim, a.centres, a.seed), a.files)
  print(f"{len(paths)} files, {a.points} points of width {a.dim} in {a.out}")


if __name__ == "__main__":
  main()
