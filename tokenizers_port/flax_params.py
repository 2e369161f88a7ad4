"""Flax weights on disk, shared by the image tokenizer ports: one safetensors file of float32 arrays
keyed by dotted parameter path, checked against the model a config builds before it is placed."""

import os
from collections.abc import Callable

import jax
import numpy as np
from flax import nnx
from safetensors.numpy import load_file, save_file

PARAMS_FILE = "params.safetensors"


def path_name(path: tuple) -> str:
  return ".".join(str(p) for p in path)


def _flat_params(model: nnx.Module) -> list:
  return nnx.to_flat_state(nnx.state(model, nnx.Param))


def abstract_params(make_model: Callable[[], nnx.Module]) -> dict[tuple, tuple]:
  """Every parameter path of the model `make_model` builds, with its shape, without allocating."""
  return {tuple(p): tuple(v.shape) for p, v in _flat_params(nnx.eval_shape(make_model))}


def model_params(model: nnx.Module) -> dict[tuple, np.ndarray]:
  return {tuple(p): np.asarray(v[...]) for p, v in _flat_params(model)}


def save_params(params: dict[tuple, np.ndarray], directory: str) -> str:
  path = os.path.join(directory, PARAMS_FILE)
  save_file({path_name(p): np.asarray(v, np.float32) for p, v in params.items()}, path)
  return path


def load_model(make_model: Callable[[], nnx.Module], directory: str, label: str, command: str):
  """The model `make_model` builds with the weights stored in `directory`; a missing file names
  `tokenizers_port.convert <command>`, and any key or shape mismatch raises naming the parameter."""
  file = os.path.join(directory, PARAMS_FILE)
  if not os.path.exists(file):
    raise FileNotFoundError(f"{file}: no {label} weights (run tokenizers_port.convert {command} first)")
  stored = load_file(file)
  model = nnx.eval_shape(make_model)
  flat = _flat_params(model)
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
