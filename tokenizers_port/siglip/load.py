"""`load(DIR)`: the converted SigLIP vision tower as a batched, jitted image -> patch-embedding
encoder (the sequence UniCode^2 clusters), optionally split over a mesh's data axis."""

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from tokenizers_port.batched_tokenizer import BatchedTokenizer
from tokenizers_port.siglip.config import SiglipConfig, load_config
from tokenizers_port.siglip.model import SiglipVisionModel
from tokenizers_port.siglip.params_io import build_model
from tokenizers_port.siglip.preprocess import normalize, normalize_table, resize_images


class SiglipEncoder(BatchedTokenizer):
  """encode_patches: uint8 images -> float32 [B, L, D]; encode_pooled: -> [B, D] (MAP head).
  Batches are padded and split over an optional mesh as `BatchedTokenizer` describes."""

  def __init__(self, model: SiglipVisionModel, config: SiglipConfig, mesh: Mesh | None = None,
               data_axis: str = "data"):
    super().__init__(model, config, mesh, data_axis)
    table = normalize_table(config)
    patches, pool = self._method("encode_patches"), self._method("pool")
    # uint8 goes to the device; the lookup-table normalisation runs inside the same jitted pass.
    self._patches_uint8 = jax.jit(lambda s, im: patches(s, normalize(im, table)))
    self._patches = jax.jit(patches)
    self._pooled_uint8 = jax.jit(lambda s, im: pool(s, normalize(im, table)))

  @property
  def image_size(self) -> int:
    """The side the tower reads (images of other sizes are resized to it)."""
    return self.config.image_size

  @property
  def num_patches(self) -> int:
    return self.config.num_patches

  @property
  def width(self) -> int:
    return self.config.hidden_size

  def _sized_uint8(self, images):
    """uint8 [B, S, S, 3] on the mesh (host PIL resize first where the size differs), true B."""
    if isinstance(images, jax.Array):
      s = self.config.image_size
      if images.dtype != jnp.uint8 or tuple(images.shape[1:]) != (s, s, 3):
        raise ValueError(f"expected uint8 [B, {s}, {s}, 3] device arrays (resize happens on the "
                         f"host), got {images.dtype} {list(images.shape)}")
      return self._shard(images)
    return self._shard(resize_images(images, self.config))

  def encode_patches(self, images) -> jax.Array:
    """uint8 images [B, H, W, 3] (or a list of [H, W, 3], any sizes) -> float32 [B, L, D]: the
    post-layernorm patch sequence, L = (image_size // patch_size)^2, after SiglipImageProcessor's
    resize and normalisation."""
    x, b = self._sized_uint8(images)
    return self._patches_uint8(self._state, x)[:b]

  def encode_pixel_values(self, pixel_values) -> jax.Array:
    """Already-normalised float [B, S, S, 3] (HF's pixel_values, NHWC) -> float32 [B, L, D]."""
    s = self.config.image_size
    x = jnp.asarray(pixel_values, jnp.float32)
    if x.ndim != 4 or tuple(x.shape[1:]) != (s, s, 3):
      raise ValueError(f"encode_pixel_values: expected float [B, {s}, {s}, 3], got {list(x.shape)}")
    x, b = self._shard(x)
    return self._patches(self._state, x)[:b]

  def encode_pooled(self, images) -> jax.Array:
    """uint8 images -> the MAP head's output float32 [B, D] (HF's pooler_output)."""
    if not self.config.vision_use_head:
      raise ValueError("encode_pooled: this SigLIP tower was converted without its MAP head")
    x, b = self._sized_uint8(images)
    return self._pooled_uint8(self._state, x)[:b]


def load(directory: str, mesh: Mesh | None = None, data_axis: str = "data",
         dtype=jnp.float32) -> SiglipEncoder:
  """The tower converted into `directory` (config.json + params.safetensors). dtype: compute dtype
  of the matmuls (layer norms and the softmax stay float32; outputs are float32)."""
  config = load_config(directory)
  return SiglipEncoder(build_model(config, directory, dtype), config, mesh, data_axis)
