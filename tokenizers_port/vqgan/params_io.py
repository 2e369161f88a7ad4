"""Flax VQGAN weights on disk (tokenizers_port.flax_params: one safetensors file of float32 arrays
keyed by parameter path) and their placement into a model built from the config."""

import os

import jax
from flax import nnx

from tokenizers_port import flax_params
from tokenizers_port.flax_params import PARAMS_FILE, path_name, save_params  # noqa: F401 (this module's API)
from tokenizers_port.vqgan.config import VQGANConfig, save_config
from tokenizers_port.vqgan.model import VQGAN


def abstract_params(cfg: VQGANConfig) -> dict[tuple, tuple]:
  """Every parameter path of the model for `cfg` with its shape, without allocating weights."""
  return flax_params.abstract_params(lambda: VQGAN(cfg, rngs=nnx.Rngs(0)))


def save_model(model: VQGAN, cfg: VQGANConfig, directory: str) -> str:
  """A Flax model as a tokenizer folder that `tokenizers_port.vqgan.load` reads: config + weights."""
  os.makedirs(directory, exist_ok=True)
  save_params(flax_params.model_params(model), directory)
  save_config(cfg, directory)
  return directory


def build_model(cfg: VQGANConfig, directory: str, dtype=jax.numpy.float32,
                conv_impl: str = "direct") -> VQGAN:
  """The model for `cfg` with the weights stored in `directory`; any key or shape mismatch raises."""
  return flax_params.load_model(
      lambda: VQGAN(cfg, rngs=nnx.Rngs(0), dtype=dtype, conv_impl=conv_impl), directory,
      label="VQGAN", command="vqgan")
