"""Batching of encoder calls (fixed sizes, padding, grouping by length) and the test doubles."""

import numpy as np

from mio_jax.tokenize import encoders
import encoder_doubles


class RecordingImageEncoder:
  """Code = the image's first pixel value, so results can be traced back to inputs."""
  image_size, grid = 4, 1

  def __init__(self):
    self.calls = []

  def encode_batch(self, images):
    self.calls.append(images.shape)
    return images[:, :1, :1, 0].astype(np.int32)


class RecordingSpeechEncoder:
  """Layer l, frame f code = l * 1000 + the clip's first sample; records (shape, lengths)."""
  n_q, hop, pad_multiple = 2, 10, 100

  def __init__(self):
    self.calls = []

  def encode_batch(self, waves, lengths):
    self.calls.append((waves.shape, lengths.tolist()))
    frames = -(-waves.shape[1] // self.hop)
    first = waves[:, 0].astype(np.int32)
    return np.stack([np.repeat(first[:, None] + 1000 * l, frames, 1) for l in range(self.n_q)])


def test_images_go_in_fixed_batches_in_order():
  enc = RecordingImageEncoder()
  images = [np.full((4, 4, 3), i, np.uint8) for i in range(7)]
  codes = encoders.encode_images(enc, images, batch_size=3)
  assert enc.calls == [(3, 4, 4, 3)] * 3  # 7 images: 3 + 3 + (1 + 2 zero rows)
  assert [int(c[0, 0]) for c in codes] == list(range(7))


def test_speech_grouped_by_padded_length_and_cut_to_own_frames():
  enc = RecordingSpeechEncoder()
  lengths = [50, 250, 100, 101, 30, 199]  # padded to 100, 300, 100, 200, 100, 200
  waves = [np.full(n, i + 1, np.float32) for i, n in enumerate(lengths)]
  codes = encoders.encode_speech(enc, waves, batch_size=2)
  # Full batches per padded length as they fill; then the leftovers together, shortest first,
  # padded to the longest; padding rows are full-length silence.
  assert enc.calls == [((2, 100), [50, 100]), ((2, 200), [101, 199]), ((2, 300), [30, 250])]
  for i, (n, c) in enumerate(zip(lengths, codes)):
    assert c.shape == (2, -(-n // 10))
    assert (c[0] == i + 1).all() and (c[1] == 1000 + i + 1).all()


def test_block_quant_double_matches_numpy():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (8, 256, 256, 3), dtype=np.uint8)
  got = encoder_doubles.BlockQuantImageEncoder(batch_size=8).encode_batch(images)
  x = images.astype(np.float64).reshape(8, 16, 16, 16, 16, 3).mean(axis=(2, 4))
  q = np.clip(np.floor(x / 64.0), 0, 3).astype(np.int32)
  np.testing.assert_array_equal(got, q[..., 0] * 16 + q[..., 1] * 4 + q[..., 2])


def test_frame_quant_double_matches_numpy():
  rng = np.random.default_rng(1)
  waves = (rng.standard_normal((8, 1000)) * 0.05).astype(np.float32)
  got = encoder_doubles.FrameQuantSpeechEncoder(batch_size=8).encode_batch(waves, np.full(8, 1000))
  padded = np.pad(waves.astype(np.float64), ((0, 0), (0, 280)))  # 4 frames of 320
  level = ((padded.reshape(8, 4, 8, 40).mean(-1) * 8 + 1) * 512).transpose(2, 0, 1)
  want = np.clip(np.floor(level), 0, 1023).astype(np.int32)
  assert got.shape == (8, 8, 4)
  # float32 in the double vs float64 here: only values within rounding of a level edge may differ.
  near_edge = np.abs(level - np.round(level)) < 1e-3
  np.testing.assert_array_equal(got[~near_edge], want[~near_edge])
  assert np.abs(got - want).max() <= 1
