"""`load(DIR)`: the converted SEED-Tokenizer-2 as a batched, jitted image -> code tokenizer, plus
the code -> unCLIP image embedding path its diffusion decoder is conditioned on."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from tokenizers_port.batched_tokenizer import BatchedTokenizer
from tokenizers_port.seed.config import SeedConfig, load_config
from tokenizers_port.seed.model import SeedTokenizerModel
from tokenizers_port.seed.params_io import build_model
from tokenizers_port.seed.preprocess import preprocess


class SeedTokenizer(BatchedTokenizer):
  """encode: uint8 [B, H, W, 3] -> int32 [B, 32]; embed_codes: int [B, 32] -> float32 [B, 1024].
  Batches are padded and split over an optional mesh as `BatchedTokenizer` describes."""

  def __init__(self, model: SeedTokenizerModel, config: SeedConfig, mesh: Mesh | None = None,
               data_axis: str = "data"):
    super().__init__(model, config, mesh, data_axis)
    # encode = preprocess, then the same compiled pass as encode_features (one compile of the
    # ViT + Q-Former per batch shape, whichever entry point is used).
    self._preprocess = jax.jit(lambda im: preprocess(im, config))
    self._encode_features = jax.jit(self._method("encode_features"))
    self._embed_codes = jax.jit(self._method("embed_codes"))

  @property
  def codes_per_image(self) -> int:
    return self.config.codes_per_image

  @property
  def codebook_size(self) -> int:
    return self.config.n_embed

  def encode(self, images) -> jax.Array:
    """uint8 images [B, H, W, 3], any size (squash-resized to image_size) -> int32 codes [B, 32]."""
    images = np.asarray(images) if not isinstance(images, jax.Array) else images
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"encode: expected uint8 [B, H, W, 3], got {images.dtype} "
                       f"{list(images.shape)}")
    x, b = self._shard(images)
    return self._encode_features(self._state, self._preprocess(x))[2][:b]

  def _normalized(self, x):
    s = self.config.image_size
    if x.ndim != 4 or tuple(x.shape[1:]) != (s, s, 3):
      raise ValueError(f"expected CLIP-normalised float [B, {s}, {s}, 3], got {list(x.shape)}")
    return self._shard(jnp.asarray(x, jnp.float32))

  def encode_features(self, x) -> dict[str, jax.Array]:
    """CLIP-normalised float [B, S, S, 3] (the reference's input, NHWC) -> {"query": the
    Q-Former's last hidden state [B, 32, hidden], "latents": the quantizer input
    [B, 32, code_dim], "codes": int32 [B, 32]}, in one jitted pass."""
    x, b = self._normalized(x)
    query, z, codes = self._encode_features(self._state, x)
    return {"query": query[:b], "latents": z[:b], "codes": codes[:b]}

  def embed_codes(self, codes) -> jax.Array:
    """int codes [B, 32] -> unCLIP image embeddings [B, unclip_dim] (get_codebook_entry)."""
    codes = jnp.asarray(codes)
    n = self.codes_per_image
    if codes.ndim != 2 or codes.shape[1] != n or not jnp.issubdtype(codes.dtype, jnp.integer):
      raise ValueError(f"embed_codes: expected integer codes [B, {n}], got {codes.dtype} "
                       f"{list(codes.shape)}")
    if codes.size and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
      raise ValueError(f"embed_codes: codes must lie in [0, {self.codebook_size}), got "
                       f"[{int(codes.min())}, {int(codes.max())}]")
    x, b = self._shard(codes.astype(jnp.int32))
    return self._embed_codes(self._state, x)[:b]


def load(directory: str, mesh: Mesh | None = None, data_axis: str = "data",
         dtype=jnp.float32) -> SeedTokenizer:
  """The tokenizer converted into `directory` (config.json + params.safetensors). dtype: compute
  dtype of the matmuls (layer norms, softmax and the codebook search stay float32)."""
  config = load_config(directory)
  return SeedTokenizer(build_model(config, directory, dtype), config, mesh, data_axis)
