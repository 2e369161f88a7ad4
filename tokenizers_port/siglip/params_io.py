"""Flax SigLIP weights on disk (tokenizers_port.flax_params: one safetensors file of float32 arrays
keyed by parameter path) and their placement into a model built from the config."""

import functools

import jax
from flax import nnx

from tokenizers_port import flax_params
from tokenizers_port.flax_params import PARAMS_FILE, path_name, save_params  # noqa: F401 (this module's API)
from tokenizers_port.siglip.config import SiglipConfig
from tokenizers_port.siglip.model import SiglipVisionModel


@functools.lru_cache(maxsize=4)  # configs are frozen; tracing the model abstractly takes a while
def abstract_params(cfg: SiglipConfig) -> dict[tuple, tuple]:
  """Every parameter path of the model for `cfg` with its shape, without allocating weights."""
  return flax_params.abstract_params(lambda: SiglipVisionModel(cfg, rngs=nnx.Rngs(0)))


def build_model(cfg: SiglipConfig, directory: str, dtype=jax.numpy.float32) -> SiglipVisionModel:
  """The model for `cfg` with the weights stored in `directory`; a key or shape mismatch raises."""
  return flax_params.load_model(lambda: SiglipVisionModel(cfg, rngs=nnx.Rngs(0), dtype=dtype),
                                directory, label="SigLIP", command="siglip")
