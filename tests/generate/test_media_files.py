"""MediaWriter.write: a block kind goes to the decoder of that kind and a file a person can open."""

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from mio_jax.generate.media_files import MediaWriter
from mio_jax.tokenize import tiny_tokenizers
from tokenizers_port import vqgan
from tokenizers_port.speechtokenizer.load import load as load_speech


@pytest.mark.slow  # VQGAN and SpeechTokenizer decodes
def test_write_dispatches_by_kind(tmp_path):
  image_dir = tiny_tokenizers.trained_tiny_vqgan_dir()
  speech_dir = tiny_tokenizers.trained_tiny_speechtokenizer_dir()
  writer = MediaWriter(image_dir, speech_dir)
  grid = np.arange(256, dtype=np.int32).reshape(16, 16)
  assert writer.write("image", grid, str(tmp_path / "a")) == {"file": str(tmp_path / "a.png")}
  # The writer decodes with XLA's convolutions (mio_jax/generate/media_files.py): the same here.
  want = np.asarray(vqgan.load(image_dir, conv_impl="direct").decode(grid.reshape(1, -1), grid=(16, 16)))[0]
  np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a.png")), want)

  speech = np.tile(np.arange(10, dtype=np.int32), (4, 1))  # 4 RVQ layers x 10 frames
  got = writer.write("speech", speech, str(tmp_path / "b"))
  assert got == {"file": str(tmp_path / "b.wav"), "seconds": 0.2}
  wave, rate = sf.read(tmp_path / "b.wav", dtype="float32")
  ref = load_speech(speech_dir).decode(speech[:, None, :])[0]
  ref = ref / max(1.0, float(np.abs(ref).max()))
  assert rate == 16000 and wave.shape == (10 * 320,)
  np.testing.assert_allclose(wave, ref, atol=1 / 32767 + 1e-6)  # 16-bit rounding

  assert MediaWriter(image_dir, None).write("speech", speech, str(tmp_path / "c")) is None
  with pytest.raises(ValueError, match="unknown media kind 'video'"):
    writer.write("video", grid, str(tmp_path / "d"))
