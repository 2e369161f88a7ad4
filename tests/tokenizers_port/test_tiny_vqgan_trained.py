"""The committed tiny VQGAN trained on the mini corpus (tokenizers_port/vqgan/train_tiny.py):
its codes follow colour and it decodes to look-alikes, unlike the random-weight tiny VQGAN."""

import dataclasses
import json
import os
import re

import numpy as np
import pytest
from PIL import Image

from mio_jax.tokenize import tiny_tokenizers
from tokenizers_port.vqgan import load
from tokenizers_port.vqgan.config import load_config

MINI = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                    "data", "mini")


def _two_images_per_background():
  """8 mini images, 2 per background colour, read off the captions -> (uint8 [8,256,256,3], bgs)."""
  picked = {}
  with open(os.path.join(MINI, "image_text.jsonl")) as f:
    for line in f:
      row = json.loads(line)
      bg = re.search(r"on an? ([a-z ]+) background", row["caption"]).group(1)
      if len(picked.setdefault(bg, [])) < 2:
        picked[bg].append(row["image"])
  bgs = sorted(picked)
  assert len(bgs) == 4, bgs
  files = [name for bg in bgs for name in picked[bg]]
  images = np.stack([np.asarray(Image.open(os.path.join(MINI, f)).convert("RGB")) for f in files])
  return images, [bg for bg in bgs for _ in range(2)]


def _roundtrip(tok, x):
  codes = np.asarray(tok.encode(x))
  return codes, np.asarray(tok.decode(codes)).astype(np.float64)


@pytest.fixture(scope="module")
def trained():
  """(images, background names, codes, reconstructions) from the committed trained folder."""
  x, bgs = _two_images_per_background()
  return x, bgs, *_roundtrip(load(tiny_tokenizers.trained_tiny_vqgan_dir()), x)


@pytest.mark.slow  # VQGAN encode and decode of the corpus
def test_reconstruction_far_better_than_random_tiny_vqgan(trained, tmp_path):
  x, _, _, recon = trained
  random = load(tiny_tokenizers.make_tiny_vqgan(str(tmp_path / "random")))
  err_trained = np.abs(recon - x).mean()
  err_random = np.abs(_roundtrip(random, x)[1] - x).mean()
  # Measured on these 8 images: 7.9 trained vs 92.7 random (mean abs error of 255).
  assert err_trained < 0.2 * err_random, (err_trained, err_random)
  assert err_trained < 15, err_trained
  # Colour: each decoded image's mean colour is near the original's (6.7 measured; random 146).
  mean_gap = np.abs(recon.mean(axis=(1, 2)) - x.mean(axis=(1, 2))).max()
  assert mean_gap < 15, mean_gap


@pytest.mark.slow  # encodes the corpus with the trained VQGAN
def test_dominant_code_follows_background_colour(trained):
  _, bgs, codes, _ = trained
  dominant = [int(np.bincount(row).argmax()) for row in codes]
  for i in range(0, 8, 2):  # same background (different shapes/colours): same dominant code
    assert dominant[i] == dominant[i + 1], (bgs[i], dominant)
  assert len(set(dominant[::2])) == 4, dict(zip(bgs[::2], dominant[::2]))  # 4 backgrounds: 4 codes


def test_same_architecture_as_random_tiny_vqgan_but_ch_8(tmp_path):
  path = tiny_tokenizers.trained_tiny_vqgan_dir()
  assert path == os.path.join(os.path.dirname(MINI), "tokenizers", "tiny_vqgan")
  random_cfg = load_config(tiny_tokenizers.make_tiny_vqgan(str(tmp_path / "random")))
  assert load_config(path) == dataclasses.replace(random_cfg, ch=8)
