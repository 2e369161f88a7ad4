"""Code-from-signal encoder doubles: deterministic and cheap, for tests that check the tokenization
job's plumbing rather than the tokenizers. The job takes them through run(config, encoder_pair).

BlockQuantImageEncoder / FrameQuantSpeechEncoder follow the interfaces in mio_jax/tokenize/encoders.py
and run batched and data-parallel over the local devices as the real adapters do.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from mio_jax.tokenize import encoders
from mio_jax.tokenize.encoders import local_mesh

# What the job's plan records as the tokenizers when the doubles encode (config keys image_tokenizer /
# speech_tokenizer are then labels, never read as folders).
LABEL = "code-from-signal test double"


def local_batch_sharding(batch_size: int) -> NamedSharding:
  return NamedSharding(local_mesh(batch_size), P("data"))


class BlockQuantImageEncoder:
  """Mean colour of each f x f block, 4 levels per channel -> code r*16 + g*4 + b."""
  kind, codebook_size = "block_quant_double", 64
  image_resize, video_defaults = "center_crop", encoders.VQGAN_VIDEO

  def __init__(self, batch_size: int, image_size: int = 256, factor: int = 16):
    self.image_size, self.grid, self.factor = image_size, image_size // factor, factor
    self.codes_per_image = self.grid * self.grid
    self.sharding = local_batch_sharding(batch_size)
    self._fn = jax.jit(self.codes_of)

  def codes_of(self, images):
    b, s, f = images.shape[0], self.image_size, self.factor
    x = images.astype(jnp.float32).reshape(b, s // f, f, s // f, f, 3).mean(axis=(2, 4))
    q = jnp.clip(jnp.floor(x / 64.0), 0, 3).astype(jnp.int32)
    return q[..., 0] * 16 + q[..., 1] * 4 + q[..., 2]

  def encode_batch(self, images: np.ndarray) -> np.ndarray:
    return np.asarray(self._fn(jax.device_put(images, self.sharding)))


class FrameQuantSpeechEncoder:
  """Layer l codes the mean of the l-th slice of each hop-sample frame, 1024 levels."""

  def __init__(self, batch_size: int, n_q: int = 8, hop: int = 320, pad_multiple: int = 16000):
    self.n_q, self.hop, self.pad_multiple = n_q, hop, pad_multiple
    self.sharding = local_batch_sharding(batch_size)
    self._fn = jax.jit(self.codes_of)

  def codes_of(self, waves):
    b, t = waves.shape
    frames = math.ceil(t / self.hop)
    x = jnp.pad(waves, ((0, 0), (0, frames * self.hop - t)))
    x = x.reshape(b, frames, self.n_q, self.hop // self.n_q).mean(axis=-1)
    q = jnp.clip(jnp.floor((x * 8 + 1) * 512), 0, 1023).astype(jnp.int32)
    return jnp.transpose(q, (2, 0, 1))

  def encode_batch(self, waves: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    del lengths  # each frame's codes depend on that frame alone
    return np.asarray(self._fn(jax.device_put(waves, self.sharding)))


def use_double_encoders(config) -> tuple[BlockQuantImageEncoder, FrameQuantSpeechEncoder]:
  """The (image, speech) doubles for a tokenize config's batch sizes, to pass as job.run's encoder_pair;
  labels the config's tokenizer keys (so the plan records what encoded the shards)."""
  config.image_tokenizer = config.speech_tokenizer = LABEL
  return (BlockQuantImageEncoder(config.image_batch_size),
          FrameQuantSpeechEncoder(config.speech_batch_size, pad_multiple=config.speech_pad_multiple or 16000))
