"""The two encoders behind a small interface, run batched and data-parallel over local devices.

ImageEncoder.encode_batch: uint8 [B, S, S, 3] -> int32 [B, h, w]   (B = batch_size, fixed; SEED: h, w = 1, 32)
SpeechEncoder.encode_batch: float32 [B, T], lengths [B] -> int32 [n_q, B, >= ceil(T / hop)]

Batches always have the same size B (the job pads the last one), so each encoder compiles once per
input shape. Inputs are placed with a NamedSharding that splits the batch axis over a 1-D mesh of
the local devices, so jit runs the encoder data-parallel. The adapters here wrap the ported
tokenizers (tokenizers_port.vqgan / .seed / .speechtokenizer, and mio_jax.codebook.tokenizer for
UniCode2); any object with the same interface can
be passed to the job instead (job.run's encoder_pair), as the tests do with cheap doubles.

The image adapters also carry what the job needs to know about their tokenizer: `kind`, the codes
per image and the codebook size (recorded in the job's index.json, which training checks against its
config), and its media policy (`image_resize`, `video_defaults` for the config's "auto" video keys).
"""

import json
import math
import os
from typing import Protocol

import jax
import numpy as np
from jax.sharding import Mesh

from mio_jax.config.keys import ConfigError


class ImageEncoder(Protocol):
  """What the job needs of an image tokenizer: its codes, what index.json records of it, and its
  media policy (the adapters below; the tests' doubles declare the same)."""
  kind: str  # recorded as index.json's "tokenizer"
  image_size: int  # images reach encode_batch as S x S
  codes_per_image: int
  codebook_size: int
  image_resize: str  # media.MediaConfig.image_resize: how an image becomes S x S
  video_defaults: dict  # pair_video_mode / num_frames where the config says "auto" / 0

  def encode_batch(self, images: np.ndarray) -> np.ndarray: ...


class SpeechEncoder(Protocol):
  n_q: int
  hop: int
  pad_multiple: int  # clips are zero-padded up to a multiple of this many samples before encoding

  def encode_batch(self, waves: np.ndarray, lengths: np.ndarray) -> np.ndarray: ...


def local_mesh(batch_size: int) -> Mesh:
  """A 1-D ("data",) mesh over this process's devices; the batch must split evenly over it."""
  devices = jax.local_devices()
  if batch_size % len(devices):
    raise ValueError(f"batch_size {batch_size} is not a multiple of the {len(devices)} local devices "
                     "(config keys image_batch_size / speech_batch_size)")
  return Mesh(np.array(devices), ("data",))


# What the job does with an image tokenizer's media when config.media asks for "auto" / 0.
VQGAN_VIDEO = {"pair_video_mode": "uniform", "num_frames": 4}  # centres of 4 segments (MIO: 4-8)
SEED2_VIDEO = {"pair_video_mode": "mio_uniform", "num_frames": 10}  # MIO's extract_frames: "~10"


def image_tokenizer_kind(directory: str) -> str:
  """"vqgan", "seed2" or "unicode2", read off the folder's config.json (config key image_tokenizer)."""
  path = os.path.join(directory, "config.json")
  try:
    with open(path) as f:
      keys = json.load(f)
  except (OSError, ValueError) as e:
    raise ConfigError(f"config key image_tokenizer={directory!r}: cannot read {path}: {e}") from None
  if "flavor" in keys:
    return "vqgan"
  if "num_query_tokens" in keys:
    return "seed2"
  if keys.get("kind") == "unicode2":
    return "unicode2"
  raise ConfigError(f"config key image_tokenizer={directory!r}: {path} is not a VQGAN, SEED or "
                   "UniCode2 config (tokenizers_port.convert vqgan | seed, mio_jax.codebook.tokenizer)")


class PortImageEncoder:
  """tokenizers_port.vqgan: encode(uint8 [B,H,W,3]) -> int32 [B, h*w] raster order."""
  kind, image_resize, video_defaults = "vqgan", "center_crop", VQGAN_VIDEO

  def __init__(self, directory: str, batch_size: int, conv_impl: str = "auto"):
    from tokenizers_port import vqgan
    # The port splits each batch over the mesh's data axis itself and replicates the weights.
    self.tokenizer = vqgan.load(directory, mesh=local_mesh(batch_size), conv_impl=conv_impl)
    cfg = self.tokenizer.config
    self.image_size, self.grid = cfg.image_size, cfg.grid_size
    self.codes_per_image, self.codebook_size = self.grid * self.grid, cfg.n_embed

  def encode_batch(self, images: np.ndarray) -> np.ndarray:
    codes = self.tokenizer.encode(images)
    return np.asarray(codes, dtype=np.int32).reshape(len(images), self.grid, self.grid)


class PortSeedEncoder:
  """tokenizers_port.seed (SEED-Tokenizer-2, MIO-7B's): encode(uint8 [B,S,S,3]) -> int32 [B, 32],
  returned as [B, 1, 32] (one row: the 32 causal Q-Former codes are a sequence, not a grid). The
  job squash-resizes images to S x S with PIL first (MIO's clip_transform), so the port's own
  resize is the identity."""
  kind, video_defaults = "seed2", SEED2_VIDEO
  _RESIZES = {"linear": "squash_bilinear", "cubic": "squash_bicubic"}

  def __init__(self, directory: str, batch_size: int):
    from tokenizers_port import seed
    self.tokenizer = seed.load(directory, mesh=local_mesh(batch_size))
    cfg = self.tokenizer.config
    if cfg.resize_method not in self._RESIZES:
      raise ConfigError(f"config key image_tokenizer={directory!r}: SEED resize_method "
                       f"{cfg.resize_method!r} has no PIL filter here (one of {sorted(self._RESIZES)})")
    self.image_size, self.image_resize = cfg.image_size, self._RESIZES[cfg.resize_method]
    self.codes_per_image, self.codebook_size = cfg.codes_per_image, cfg.n_embed

  def encode_batch(self, images: np.ndarray) -> np.ndarray:
    codes = np.asarray(self.tokenizer.encode(images), dtype=np.int32)
    return codes.reshape(len(images), 1, self.codes_per_image)


class UniCode2Encoder:
  """mio_jax.codebook.tokenizer (SigLIP patches -> frozen-codebook ids): int32 [B, g, g], the
  patch grid in raster order (g x g = the tower's patches). The job squash-resizes images with PIL's
  bicubic filter first, as SiglipImageProcessor does, so the tower's own resize is the identity.
  Videos: as the VQGAN's (UniCode2 says nothing of frames; 729 ids per frame at 384 px)."""
  kind, image_resize, video_defaults = "unicode2", "squash_bicubic", VQGAN_VIDEO

  def __init__(self, directory: str, batch_size: int):
    from mio_jax.codebook import tokenizer
    self.tokenizer = tokenizer.load(directory, tokenizer.local_codebook_mesh(batch_size))
    self.image_size, self.codebook_size = self.tokenizer.image_size, self.tokenizer.codebook_size
    self.codes_per_image = self.tokenizer.codes_per_image
    self.grid = math.isqrt(self.codes_per_image)
    if self.grid * self.grid != self.codes_per_image:
      raise ConfigError(f"config key image_tokenizer={directory!r}: {self.codes_per_image} patches "
                        "are not a square grid")

  def encode_batch(self, images: np.ndarray) -> np.ndarray:
    return self.tokenizer.encode(images).reshape(len(images), self.grid, self.grid)


def image_code_record(encoder: ImageEncoder | None) -> dict | None:
  """{"tokenizer", "codes_per_image", "codebook_size"} of an image encoder (None for none), as the
  job records it in index.json."""
  if encoder is None:
    return None
  return {"tokenizer": encoder.kind, "codes_per_image": encoder.codes_per_image,
          "codebook_size": encoder.codebook_size}


class PortSpeechEncoder:
  """tokenizers_port.speechtokenizer: encode(float32 [B,T] at 16 kHz) -> int32 [n_q, B, ceil(T/320)]."""

  def __init__(self, directory: str, batch_size: int, n_q: int = 8, pad_multiple: int = 0):
    from tokenizers_port import speechtokenizer
    # The port shards its padded batch over the mesh itself and masks each clip to its length.
    # pad_multiple > 0 overrides the port's: larger means fewer compiled lengths, more padding.
    overrides = {"pad_multiple": pad_multiple} if pad_multiple > 0 else {}
    self.tokenizer = speechtokenizer.load(directory, mesh=local_mesh(batch_size), **overrides)
    cfg = self.tokenizer.cfg
    self.n_q, self.hop, self.pad_multiple = n_q, cfg.hop_length, cfg.pad_multiple

  def encode_batch(self, waves: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    return np.asarray(self.tokenizer.encode(waves, lengths=lengths, n_q=self.n_q), dtype=np.int32)


def build_encoders(config) -> tuple[ImageEncoder | None, SpeechEncoder | None]:
  """Config keys image_tokenizer / speech_tokenizer: a converted folder, or "" (none). The image
  folder's config.json says which tokenizer it is (VQGAN, SEED-Tokenizer-2 or UniCode2)."""
  image = speech = None
  if config.image_tokenizer:
    kind = image_tokenizer_kind(config.image_tokenizer)
    if kind == "seed2":
      image = PortSeedEncoder(config.image_tokenizer, config.image_batch_size)
    elif kind == "unicode2":
      image = UniCode2Encoder(config.image_tokenizer, config.image_batch_size)
    else:
      image = PortImageEncoder(config.image_tokenizer, config.image_batch_size, config.image_conv_impl)
  if config.speech_tokenizer:
    speech = PortSpeechEncoder(config.speech_tokenizer, config.speech_batch_size,
                               pad_multiple=config.speech_pad_multiple)
  return image, speech


class ImageBatcher:
  """Feeds images to the encoder in fixed-size batches as they arrive (the last one zero-padded),
  so encoding starts while later samples still decode. Results come back in arrival order."""

  def __init__(self, encoder: ImageEncoder, batch_size: int):
    self.encoder, self.batch_size = encoder, batch_size
    self.pending: list[np.ndarray] = []
    self.codes: list[np.ndarray] = []

  def add(self, image: np.ndarray):
    self.pending.append(image)
    if len(self.pending) == self.batch_size:
      self._flush()

  def _flush(self):
    if not self.pending:
      return
    batch = np.zeros((self.batch_size,) + self.pending[0].shape, np.uint8)
    batch[:len(self.pending)] = np.stack(self.pending)
    codes = self.encoder.encode_batch(batch)
    self.codes += [codes[i] for i in range(len(self.pending))]
    self.pending = []

  def finish(self) -> list[np.ndarray]:
    """-> int32 [h, w] per image, in the order added."""
    self._flush()
    return self.codes


def padded_length(n: int, multiple: int) -> int:
  return max(1, math.ceil(n / multiple)) * multiple


class SpeechBatcher:
  """Clips grouped by padded length (a multiple of pad_multiple), each group sent to the encoder
  as a full batch as soon as it fills, while later samples still decode. At the end the groups'
  leftovers are sorted by length and sent together, so a shard has at most one partial batch.
  Every clip's codes are cut to its own ceil(len / hop) frames. Codes do not depend on batch mates
  as long as the encoder honours `lengths` (the ported SpeechTokenizer masks each clip; the
  frame-local double needs no mask)."""

  def __init__(self, encoder: SpeechEncoder, batch_size: int):
    self.encoder, self.batch_size = encoder, batch_size
    self.groups: dict[int, list[tuple[int, np.ndarray]]] = {}
    self.codes: list[np.ndarray | None] = []

  def add(self, wave: np.ndarray):
    length = padded_length(len(wave), self.encoder.pad_multiple)
    group = self.groups.setdefault(length, [])
    group.append((len(self.codes), wave))
    self.codes.append(None)
    if len(group) == self.batch_size:
      self._encode(self.groups.pop(length))

  def _encode(self, chunk: list[tuple[int, np.ndarray]]):
    length = padded_length(max(len(w) for _, w in chunk), self.encoder.pad_multiple)
    batch = np.zeros((self.batch_size, length), np.float32)
    lengths = np.full(self.batch_size, length, np.int32)  # padding rows: full-length silence
    for row, (_, wave) in enumerate(chunk):
      batch[row, :len(wave)] = wave
      lengths[row] = len(wave)
    codes = self.encoder.encode_batch(batch, lengths)
    for row, (i, wave) in enumerate(chunk):
      self.codes[i] = np.ascontiguousarray(codes[:, row, :math.ceil(len(wave) / self.encoder.hop)])

  def finish(self) -> list[np.ndarray]:
    """-> int32 [n_q, frames] per clip, in the order added."""
    rest = sorted((item for group in self.groups.values() for item in group),
                  key=lambda item: (len(item[1]), item[0]))
    self.groups = {}
    for start in range(0, len(rest), self.batch_size):
      self._encode(rest[start:start + self.batch_size])
    return self.codes


def encode_images(encoder: ImageEncoder, images: list[np.ndarray], batch_size: int) -> list[np.ndarray]:
  batcher = ImageBatcher(encoder, batch_size)
  for image in images:
    batcher.add(image)
  return batcher.finish()


def encode_speech(encoder: SpeechEncoder, waves: list[np.ndarray], batch_size: int) -> list[np.ndarray]:
  batcher = SpeechBatcher(encoder, batch_size)
  for wave in waves:
    batcher.add(wave)
  return batcher.finish()
