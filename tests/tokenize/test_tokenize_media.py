"""Media decoding, MIO's filters and frame selection, against hand-built inputs."""

import json
import os

import av
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from mio_jax.tokenize import media
from tokenize_helpers import MINI

CFG = media.MediaConfig()


def _videos():
  with open(os.path.join(MINI, "video_text.jsonl")) as f:
    return [json.loads(line) for line in f]


@pytest.mark.parametrize("size,category", [((223, 400), "image under 224x224"),
                                           ((224, 449), "image aspect ratio over 2:1"),
                                           ((449, 224), "image aspect ratio over 2:1")])
def test_image_filters_reject(tmp_path, size, category):
  path = str(tmp_path / "x.png")
  Image.new("RGB", size).save(path)
  with pytest.raises(media.MediaError) as e:
    media.load_image({"path": path}, CFG)
  assert e.value.category == category and path in str(e.value)


def test_image_at_filter_edges_is_kept_and_center_cropped(tmp_path):
  # 224 x 448 is exactly 2:1: kept. Shorter side -> 256, then the centre 256 x 256.
  x = np.zeros((448, 224, 3), np.uint8)
  x[:224] = 255  # top half white: the centre crop straddles the boundary at its middle row
  path = str(tmp_path / "edge.png")
  Image.fromarray(x).save(path)
  out = media.load_image({"path": path}, CFG)
  assert out.shape == (256, 256, 3) and out.dtype == np.uint8
  assert (out[:100] == 255).all() and (out[-100:] == 0).all()


def test_speech_resampled_to_16k_and_length_filter(tmp_path):
  path = str(tmp_path / "a.wav")
  t = np.arange(22050) / 22050
  sf.write(path, np.stack([np.sin(2 * np.pi * 440 * t)] * 2, 1) * 0.5, 22050)  # 1 s stereo
  x = media.load_speech({"path": path}, CFG)
  assert x.dtype == np.float32 and x.shape == (16000,)
  # A 440 Hz tone stays a 440 Hz tone after mono mixdown and resampling.
  assert abs(np.argmax(np.abs(np.fft.rfft(x))) - 440) <= 1
  with pytest.raises(media.MediaError, match="resampling disabled"):
    media.load_speech({"path": path}, media.MediaConfig(resample=False))
  with pytest.raises(media.MediaError, match=r"speech over 0.5 s \(1.0 s\)"):
    media.load_speech({"path": path}, media.MediaConfig(speech_max_s=0.5))


def test_uniform_indices_are_segment_centres():
  assert media.uniform_indices(16, 4).tolist() == [2, 6, 10, 14]
  assert media.uniform_indices(10, 8).tolist() == [0, 1, 3, 4, 5, 6, 8, 9]
  assert media.uniform_indices(3, 4).tolist() == [0, 1, 2]


def test_keyframes_find_the_scene_cut_of_mini_videos():
  for row in _videos()[:8]:
    frames = media.load_video({"path": os.path.join(MINI, row["video"])}, "keyframes", CFG)
    cut = "scene cuts" in row["description"]
    assert len(frames) == (2 if cut else 1), row


def test_uniform_video_frames_match_pyav_decoding():
  path = os.path.join(MINI, _videos()[1]["video"])
  with av.open(path) as c:
    all_frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
  got = media.load_video({"path": path}, "uniform", media.MediaConfig(num_frames=4))
  np.testing.assert_array_equal(got, np.stack([all_frames[i] for i in (2, 6, 10, 14)]))


def test_keyframes_capped_to_strongest_cuts():
  thumbs = np.zeros((10, 32, 32), np.uint8)
  for start, level in ((2, 50), (5, 250), (8, 120)):  # three cuts of strength 50, 200, 130
    thumbs[start:] = level
  assert media.keyframe_indices(thumbs, 30.0, 8).tolist() == [0, 2, 5, 8]
  assert media.keyframe_indices(thumbs, 30.0, 3).tolist() == [0, 5, 8]
