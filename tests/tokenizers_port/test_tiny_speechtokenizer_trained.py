"""The committed tiny SpeechTokenizer (tokenizers_port/speechtokenizer/train_tiny.py): its layer-1
codes follow what is said, unlike the random-weight tiny SpeechTokenizer's, and its decoder puts
back what the encoder reads."""

import json
import os

import numpy as np
import pytest

from mio_jax.tokenize import tiny_tokenizers
from tokenizers_port.speechtokenizer import load
from tokenizers_port.speechtokenizer import train_tiny

MINI = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                    "data", "mini")


@pytest.fixture(scope="module")
def corpus():
  names, clips = train_tiny.load_clips(os.path.join(MINI, "speech"))
  texts = train_tiny.transcripts(os.path.join(MINI, "speech_text.jsonl"))
  return clips, [texts[n] for n in names]


def _layer1(tok_dir, clips):
  codes = load(tok_dir).encode(clips, n_q=1)[0]
  return [c[c >= 0] for c in codes]


@pytest.mark.slow  # encodes the held-out speech
def test_codes_tell_held_out_transcripts_apart(corpus, tmp_path):
  """Nearest neighbour by code edit distance names held-out clips' transcripts (half of the 20
  have a training twin, so 0.5 is the ceiling); the random tokenizer's codes are near chance."""
  clips, texts = corpus
  trained = train_tiny.nearest_transcript_accuracy(
      _layer1(tiny_tokenizers.trained_tiny_speechtokenizer_dir(), clips), texts)
  random = train_tiny.nearest_transcript_accuracy(
      _layer1(tiny_tokenizers.make_tiny_speechtokenizer(str(tmp_path / "random")), clips), texts)
  assert trained >= 0.25, trained
  assert random <= 0.1, random


@pytest.mark.slow  # encode and decode
def test_decoder_puts_back_what_the_encoder_reads(corpus, tmp_path):
  """decode(first 4 layers) then re-encode keeps many layer-1 codes; with the same encoder and
  codebooks but the decoder's weights from before training (random_params), almost none."""
  from safetensors.numpy import load_file
  from tokenizers_port.speechtokenizer.config import SpeechTokenizerConfig
  from tokenizers_port.speechtokenizer.load import random_params, save
  clips = corpus[0][::4]
  path = tiny_tokenizers.trained_tiny_speechtokenizer_dir()
  trained = train_tiny.roundtrip_agreement(load(path), clips)
  cfg = SpeechTokenizerConfig.from_json(os.path.join(path, "config.json"))
  params = load_file(os.path.join(path, "params.safetensors"))
  params.update({k: v for k, v in random_params(cfg, seed=0).items() if k.startswith("decoder/")})
  save(str(tmp_path / "random_decoder"), cfg, params)
  random = train_tiny.roundtrip_agreement(load(str(tmp_path / "random_decoder")), clips)
  assert trained >= 0.25 and random <= 0.1, (trained, random)


@pytest.mark.slow  # encode and decode
def test_unfitted_codebook_rows_are_never_chosen_and_decode(corpus):
  clips, _ = corpus
  from safetensors.numpy import load_file
  path = tiny_tokenizers.trained_tiny_speechtokenizer_dir()
  books = load_file(os.path.join(path, "params.safetensors"))["quantizer/codebooks"]
  tok = load(path)
  codes = tok.encode(clips[:8])
  for q in range(books.shape[0]):
    assert codes[q].max() < len(np.unique(books[q], axis=0)), q
  wav = tok.decode(np.full((8, 1, 5), tok.cfg.codebook_size - 1))  # a repeated row decodes finite
  assert wav.shape == (1, 5 * tok.hop_length) and np.isfinite(wav).all()


def test_mfcc_targets_hand_checked():
  """A 1 kHz tone's loudest mel band is the one centred nearest 1 kHz; a chirp gets one row per
  320-sample frame, every coefficient standardised over the clip."""
  sr, hop = 16000, 320
  t = np.arange(int(0.5 * sr)) / sr
  fb = train_tiny._mel_filters(sr, 1024, 40)
  spectrum = np.abs(np.fft.rfft(np.sin(2 * np.pi * 1000 * t[:640]) * np.hanning(640), 1024)) ** 2
  centres = np.argmax(fb, axis=1) * sr / 1024
  assert abs(centres[np.argmax(fb @ spectrum)] - 1000) < 80
  wave = np.sin(2 * np.pi * (300 + 2700 * t) * t)  # 300 Hz rising to 3 kHz: every coefficient moves
  m = train_tiny.mfcc_targets(wave.astype(np.float32), hop, sr)
  assert m.shape == (-(-len(wave) // hop), train_tiny.N_COEF)
  np.testing.assert_allclose(m.mean(0), 0, atol=1e-5)
  np.testing.assert_allclose(m.std(0), 1, atol=1e-3)


def test_same_release_interfaces_as_the_random_tiny_tokenizer(tmp_path):
  path = tiny_tokenizers.trained_tiny_speechtokenizer_dir()
  with open(os.path.join(path, "config.json")) as f:
    trained = json.load(f)
  with open(os.path.join(tiny_tokenizers.make_tiny_speechtokenizer(str(tmp_path)), "config.json")) as f:
    random = json.load(f)
  for key in ("strides", "codebook_size", "n_q", "sample_rate"):
    assert trained[key] == random[key], key
