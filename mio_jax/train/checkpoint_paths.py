"""Where a run's checkpoints are, on local disk or gs:// (etils.epath through mio_jax.storage).

  WORKDIR/checkpoints/<step>/params     (layout: mio_jax/train/checkpoint.py, docs/checkpoints.md)

Kept apart from checkpoint.py so the export and the generator find parameters without the
training code; checkpoint.py uses these too.
"""

from __future__ import annotations

import os

from mio_jax import storage


def checkpoint_dir(workdir: str) -> str:
  """WORKDIR/checkpoints: absolute for a local WORKDIR, the URL itself for gs://."""
  return os.fspath(storage.as_path(workdir) / "checkpoints")


def _steps(root) -> list[int]:
  try:
    return [int(p.name) for p in root.iterdir() if p.name.isdigit()]
  except (FileNotFoundError, NotADirectoryError):
    return []


def resolve_params_dir(path: str) -> str:
  """`init_from` may name a workdir (latest step), a checkpoints dir, a step dir, or its params dir."""
  root = storage.as_path(path)
  if root.name == "params" and root.is_dir():
    return os.fspath(root)
  if (root / "params").is_dir():
    return os.fspath(root / "params")
  for base in (root / "checkpoints", root):
    steps = _steps(base) if base.is_dir() else []
    if steps:
      return os.fspath(base / str(max(steps)) / "params")
  raise FileNotFoundError(f"config.init_from={os.fspath(root)!r}: no checkpoint with a params item found there")
