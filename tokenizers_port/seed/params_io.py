"""Flax SEED weights on disk (one safetensors file of float32 arrays keyed by parameter path)
and their placement into a model built from the config."""

import functools
import os

import jax
import numpy as np
from flax import nnx
from safetensors.numpy import load_file, save_file

from tokenizers_port.seed.config import SeedConfig
from tokenizers_port.seed.model import SeedTokenizerModel

PARAMS_FILE = "params.safetensors"


def path_name(path: tuple) -> str:
  return ".".join(str(p) for p in path)


@functools.lru_cache(maxsize=4)  # tracing the model abstractly takes seconds; configs are frozen
def abstract_params(cfg: SeedConfig) -> dict[tuple, tuple]:
  """Every parameter path of the model for `cfg` with its shape, without allocating weights."""
  model = nnx.eval_shape(lambda: SeedTokenizerModel(cfg, rngs=nnx.Rngs(0)))
  return {tuple(p): tuple(v.shape) for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def save_params(params: dict[tuple, np.ndarray], directory: str) -> str:
  path = os.path.join(directory, PARAMS_FILE)
  save_file({path_name(p): np.asarray(v, np.float32) for p, v in params.items()}, path)
  return path


def build_model(cfg: SeedConfig, directory: str, dtype=jax.numpy.float32) -> SeedTokenizerModel:
  """The model for `cfg` with the weights stored in `directory`; a key or shape mismatch raises."""
  file = os.path.join(directory, PARAMS_FILE)
  if not os.path.exists(file):
    raise FileNotFoundError(f"{file}: no SEED weights (run tokenizers_port.convert seed first)")
  stored = load_file(file)
  model = nnx.eval_shape(lambda: SeedTokenizerModel(cfg, rngs=nnx.Rngs(0), dtype=dtype))
  flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
  expected = {path_name(p) for p, _ in flat}
  for name in sorted(set(stored) - expected):
    raise ValueError(f"{file}: unexpected parameter {name!r} for this config")
  leaves = []
  for p, var in flat:
    name = path_name(p)
    if name not in stored:
      raise ValueError(f"{file}: missing parameter {name!r}")
    if tuple(stored[name].shape) != tuple(var.shape):
      raise ValueError(f"{file}: parameter {name!r} has shape {stored[name].shape}, "
                       f"config expects {tuple(var.shape)}")
    leaves.append((p, var.replace(jax.numpy.asarray(stored[name]))))
  nnx.update(model, nnx.from_flat_state(leaves))
  return model
