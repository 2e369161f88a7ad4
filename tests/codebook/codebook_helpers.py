"""Data, configs and float64 oracles for the codebook tests."""

from __future__ import annotations

import numpy as np

import configs.codebook as codebook_config
from mio_jax.codebook.demo_data import blobs, write_files  # noqa: F401 - the tests' data, from here

__all__ = ["blobs", "write_files", "photo_patches", "squared_distances64", "inertia64", "tiny_config"]


def photo_patches(n: int, size: int = 8, seed: int = 0) -> np.ndarray:
  """n grey-level size x size patches [n, size^2] from scikit-image's photographs, at random places:
  real image structure (edges, texture, flat regions) with no planted clusters."""
  import skimage.data
  from skimage.color import rgb2gray
  images = [rgb2gray(skimage.data.astronaut()), skimage.data.camera() / 255.0,
            rgb2gray(skimage.data.coffee()), rgb2gray(skimage.data.chelsea())]
  rng = np.random.default_rng(seed)
  out = np.empty((n, size * size), np.float32)
  for i in range(n):
    im = images[i % len(images)]
    y, x = rng.integers(0, im.shape[0] - size), rng.integers(0, im.shape[1] - size)
    out[i] = im[y:y + size, x:x + size].ravel()
  return out


def squared_distances64(x: np.ndarray, c: np.ndarray) -> np.ndarray:
  """[n, K] squared distances in float64, term by term (no expansion)."""
  x, c = x.astype(np.float64), c.astype(np.float64)
  return np.stack([np.sum((x - ci) ** 2, axis=1) for ci in c], axis=1)


def inertia64(x: np.ndarray, c: np.ndarray) -> float:
  return float(squared_distances64(x, c).min(axis=1).sum())


def tiny_config(embeddings: str, **overrides):
  """The tiny preset on `embeddings`, checkpoints only at the end, `overrides` as dotted keys."""
  c = codebook_config.get_config("tiny")
  c.data.embeddings = embeddings
  c.checkpoint_every = 0
  c.log_every = 1000
  for key, value in overrides.items():
    *path, name = key.split(".")
    section = c
    for p in path:
      section = section[p]
    section[name] = value
  return c
