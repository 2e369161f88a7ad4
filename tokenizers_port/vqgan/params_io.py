"""Flax VQGAN weights on disk (one safetensors file of float32 arrays keyed by parameter path)
and their placement into a model built from the config."""

import os

import jax
import numpy as np
from flax import nnx
from safetensors.numpy import load_file, save_file

from tokenizers_port.vqgan.config import VQGANConfig, save_config
from tokenizers_port.vqgan.model import VQGAN

PARAMS_FILE = "params.safetensors"


def path_name(path: tuple) -> str:
  return ".".join(str(p) for p in path)


def abstract_params(cfg: VQGANConfig) -> dict[tuple, tuple]:
  """Every parameter path of the model for `cfg` with its shape, without allocating weights."""
  model = nnx.eval_shape(lambda: VQGAN(cfg, rngs=nnx.Rngs(0)))
  return {tuple(p): tuple(v.shape) for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def save_params(params: dict[tuple, np.ndarray], directory: str) -> str:
  path = os.path.join(directory, PARAMS_FILE)
  save_file({path_name(p): np.asarray(v, np.float32) for p, v in params.items()}, path)
  return path


def save_model(model: VQGAN, cfg: VQGANConfig, directory: str) -> str:
  """A Flax model as a tokenizer folder that `tokenizers_port.vqgan.load` reads: config + weights."""
  os.makedirs(directory, exist_ok=True)
  flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
  save_params({tuple(p): np.asarray(v[...]) for p, v in flat}, directory)
  save_config(cfg, directory)
  return directory


def build_model(cfg: VQGANConfig, directory: str, dtype=jax.numpy.float32,
                conv_impl: str = "direct") -> VQGAN:
  """The model for `cfg` with the weights stored in `directory`; any key or shape mismatch raises."""
  file = os.path.join(directory, PARAMS_FILE)
  if not os.path.exists(file):
    raise FileNotFoundError(f"{file}: no VQGAN weights (run tokenizers_port.convert vqgan first)")
  stored = load_file(file)
  model = nnx.eval_shape(lambda: VQGAN(cfg, rngs=nnx.Rngs(0), dtype=dtype, conv_impl=conv_impl))
  state = nnx.state(model, nnx.Param)
  flat = nnx.to_flat_state(state)
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
