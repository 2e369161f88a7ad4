"""Generated code blocks -> files a person can open: PNG through the VQGAN decoder, WAV through the
SpeechTokenizer decoder (16 kHz mono; the RVQ layers the vocabulary keeps, content first).

    writer = MediaWriter(image_tokenizer="tok/vqgan", speech_tokenizer="tok/speechtokenizer")
    writer.write_image(codes_hw, "out/cat.png"); writer.write_speech(codes_lf, "out/hello.wav")
    writer.write("image", codes_hw, "out/cat")  # -> {"file": "out/cat.png"}, by block kind
"""

from __future__ import annotations

import functools

import numpy as np


class MediaWriter:
  def __init__(self, image_tokenizer: str | None = None, speech_tokenizer: str | None = None):
    self.image_dir, self.speech_dir = image_tokenizer, speech_tokenizer

  @functools.cached_property
  def _vqgan(self):
    from tokenizers_port import vqgan
    # XLA's own convolutions: a writer decodes a few images, where Winograd's faster calls do not
    # repay its compile (tiny VQGAN on 2 AVX2 cores: 38 s against a few seconds).
    return vqgan.load(self.image_dir, conv_impl="direct")

  @functools.cached_property
  def _speech(self):
    from tokenizers_port.speechtokenizer.load import load
    return load(self.speech_dir)

  def write(self, kind: str, codes: np.ndarray, stem: str) -> dict | None:
    """A complete `kind` block ("image" | "speech") -> `stem`.png / .wav, by the decoder of that
    kind: {"file": path} (plus "seconds" for speech), or None when no tokenizer of that kind."""
    if kind not in ("image", "speech"):
      raise ValueError(f"{stem}: unknown media kind {kind!r}")
    if kind == "image" and self.image_dir:
      self.write_image(codes, stem + ".png")
      return {"file": stem + ".png"}
    if kind == "speech" and self.speech_dir:
      return {"file": stem + ".wav", "seconds": round(self.write_speech(codes, stem + ".wav"), 2)}
    return None

  def write_image(self, codes: np.ndarray, path: str) -> tuple[int, int]:
    """Image codes ([h, w] grid, or flat and square) -> PNG at `path`; returns (height, width)."""
    from PIL import Image
    pixels = self.image_pixels(codes, where=path)
    Image.fromarray(pixels).save(path)
    return pixels.shape[:2]

  def image_pixels(self, codes: np.ndarray, where: str = "image") -> np.ndarray:
    """Image codes ([h, w] grid, or flat and square) -> uint8 RGB pixels [height, width, 3]."""
    if not self.image_dir:
      raise ValueError(f"{where}: no image tokenizer given to decode image codes")
    codes = np.asarray(codes, np.int32)
    grid = codes.shape if codes.ndim == 2 else None
    return np.asarray(self._vqgan.decode(codes.reshape(1, -1), grid=grid))[0]

  def write_speech(self, codes: np.ndarray, path: str) -> float:
    """Speech codes [layers, frames] (content layer first) -> 16-bit WAV at `path`; returns seconds."""
    import soundfile as sf
    wave, rate = self.speech_wave(codes, where=path)
    sf.write(path, wave, rate, subtype="PCM_16")
    return len(wave) / rate

  def speech_wave(self, codes: np.ndarray, where: str = "speech") -> tuple[np.ndarray, int]:
    """Speech codes [layers, frames] (content layer first) -> (mono wave in [-1, 1], sample rate)."""
    if not self.speech_dir:
      raise ValueError(f"{where}: no speech tokenizer given to decode speech codes")
    codes = np.asarray(codes, np.int32)
    if codes.ndim != 2 or codes.shape[1] == 0:
      raise ValueError(f"{where}: speech codes must be [layers, frames] with frames > 0, got {codes.shape}")
    wave = np.asarray(self._speech.decode(codes[:, None, :])[0])
    peak = float(np.abs(wave).max())
    if peak > 1.0:  # a random-weight decoder is not level-calibrated: normalise rather than clip
      wave = wave / peak
    return wave, int(self._speech.cfg.sample_rate)
