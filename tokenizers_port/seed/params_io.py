"""Flax SEED weights on disk (tokenizers_port.flax_params: one safetensors file of float32 arrays
keyed by parameter path) and their placement into a model built from the config."""

import functools

import jax
from flax import nnx

from tokenizers_port import flax_params
from tokenizers_port.flax_params import PARAMS_FILE, path_name, save_params  # noqa: F401 (this module's API)
from tokenizers_port.seed.config import SeedConfig
from tokenizers_port.seed.model import SeedTokenizerModel


@functools.lru_cache(maxsize=4)  # tracing the model abstractly takes seconds; configs are frozen
def abstract_params(cfg: SeedConfig) -> dict[tuple, tuple]:
  """Every parameter path of the model for `cfg` with its shape, without allocating weights."""
  return flax_params.abstract_params(lambda: SeedTokenizerModel(cfg, rngs=nnx.Rngs(0)))


def build_model(cfg: SeedConfig, directory: str, dtype=jax.numpy.float32) -> SeedTokenizerModel:
  """The model for `cfg` with the weights stored in `directory`; a key or shape mismatch raises."""
  return flax_params.load_model(lambda: SeedTokenizerModel(cfg, rngs=nnx.Rngs(0), dtype=dtype),
                                directory, label="SEED", command="seed")
