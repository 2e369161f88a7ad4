"""`load(DIR)`: the converted VQGAN as a batched, jitted image <-> code tokenizer."""

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from tokenizers_port.batched_tokenizer import BatchedTokenizer
from tokenizers_port.vqgan.config import VQGANConfig, load_config
from tokenizers_port.vqgan.model import VQGAN, cache_winograd_kernels
from tokenizers_port.vqgan.params_io import build_model
from tokenizers_port.vqgan.preprocess import preprocess, to_uint8


class VQGANTokenizer(BatchedTokenizer):
  """encode: uint8 [B, H, W, C] -> int32 [B, h*w] (raster order); decode: the reverse.
  Batches are padded and split over an optional mesh as `BatchedTokenizer` describes."""

  def __init__(self, model: VQGAN, config: VQGANConfig, mesh: Mesh | None = None,
               data_axis: str = "data"):
    super().__init__(model, config, mesh, data_axis)
    encode = self._method("encode")
    decode = self._method("decode")
    self._encode = jax.jit(lambda s, im: encode(s, preprocess(im, config)))
    self._decode = jax.jit(lambda s, c, h, w: to_uint8(decode(s, c, h, w)), static_argnums=(2, 3))
    self._decode_float = jax.jit(decode, static_argnums=(2, 3))
    self._encode_latents = jax.jit(self._method("encode_latents"))
    self._decode_latents = jax.jit(self._method("decode_latents"))

  @property
  def codes_per_image(self) -> int:
    return self.config.grid_size ** 2

  def encode(self, images) -> jax.Array:
    images = np.asarray(images) if not isinstance(images, jax.Array) else images
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != self.config.in_channels:
      raise ValueError(f"encode: expected uint8 [B, H, W, {self.config.in_channels}], got "
                       f"{images.dtype} {list(images.shape)}")
    x, b = self._shard(images)
    return self._encode(self._state, x)[:b]

  def decode(self, codes, grid: tuple[int, int] | None = None) -> jax.Array:
    """int codes [B, h*w] -> uint8 images [B, h*f, w*f, C]; grid (h, w) defaults to a square."""
    x, b, grid = self._codes(codes, grid)
    return self._decode(self._state, x, *grid)[:b]

  def decode_float(self, codes, grid: tuple[int, int] | None = None) -> jax.Array:
    """As `decode`, but the raw float decoder output (nominally [-1, 1], not clipped)."""
    x, b, grid = self._codes(codes, grid)
    return self._decode_float(self._state, x, *grid)[:b]

  def _codes(self, codes, grid):
    codes = jnp.asarray(codes)
    if codes.ndim != 2 or not jnp.issubdtype(codes.dtype, jnp.integer):
      raise ValueError(f"decode: expected integer codes [B, h*w], got {codes.dtype} "
                       f"{list(codes.shape)}")
    if grid is None:
      side = math.isqrt(codes.shape[1])
      if side * side != codes.shape[1]:
        raise ValueError(f"decode: {codes.shape[1]} codes per image is not a square; pass grid")
      grid = (side, side)
    if grid[0] * grid[1] != codes.shape[1]:
      raise ValueError(f"decode: grid {grid} does not hold {codes.shape[1]} codes")
    x, b = self._shard(codes.astype(jnp.int32))
    return x, b, tuple(grid)

  def encode_latents(self, x) -> jax.Array:
    """float [B, H, W, C] in [-1, 1] -> continuous latents before quantisation."""
    x, b = self._shard(x)
    return self._encode_latents(self._state, x)[:b]

  def decode_latents(self, z) -> jax.Array:
    """Code vectors [B, h, w, embed_dim] -> float images, nominally in [-1, 1]."""
    z, b = self._shard(z)
    return self._decode_latents(self._state, z)[:b]


def resolve_conv_impl(conv_impl: str, mesh: Mesh | None = None) -> str:
  """"auto" -> "winograd" where the tokenizer runs on CPU, "direct" on GPU/TPU (whose convolutions
  XLA maps to cuDNN / the MXU); any other value is returned as it is."""
  if conv_impl != "auto":
    return conv_impl
  platform = mesh.devices.flat[0].platform if mesh is not None else jax.default_backend()
  return "winograd" if platform == "cpu" else "direct"


def load(directory: str, mesh: Mesh | None = None, data_axis: str = "data",
         dtype=jnp.float32, conv_impl: str = "auto") -> VQGANTokenizer:
  """The tokenizer converted into `directory` (config.json + params.safetensors).

  conv_impl: "direct" (XLA's convolution) or "winograd" (3x3 convs as Winograd F(4x4, 3x3) on
  accuracy-chosen points: ~1.6x the CPU encode throughput of "direct" and as close to a float64
  run of the PyTorch reference, but compiles ~3x slower); "winograd-f4" / "winograd-f2" pick
  other variants (see winograd.py); "auto" (default): "winograd" on CPU, "direct" elsewhere.
  """
  conv_impl = resolve_conv_impl(conv_impl, mesh)
  config = load_config(directory)
  model = build_model(config, directory, dtype, conv_impl)
  # The weights are fixed from here on: transform the encoder's once (~0.4 GB for the f16 configs);
  # the decoder's (~0.6 GB cached) are transformed per call, a small part of a decode.
  cache_winograd_kernels(model.encoder)
  return VQGANTokenizer(model, config, mesh, data_axis)
