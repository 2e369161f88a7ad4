"""The official SEED-Tokenizer-2 sizes (EVA-CLIP ViT-g/14 39 blocks at 224 px, bert-base Q-Former
with cross-attention every 2nd layer, 8192 x 32 codes) against the vendored PyTorch reference,
random weights. About 1.1B parameters: peak ~10 GB of host memory and several CPU-minutes per
image, hence slow. Same assertions as test_seed_convert.py's reduced model, over every scikit-image
photograph the codebook calibration did not use (43 images, 1,376 codes)."""

import functools
import gc

import numpy as np
import pytest

from seed_reference import build as ref  # tests/tokenizers_port/seed_reference
from tokenizers_port.seed import convert, load
from tokenizers_port.vqgan.reference import photographs

BATCH = 8  # images per encode call, both sides: activations of a few GB at ViT-g's size


def in_batches(encode, images: np.ndarray) -> dict[str, np.ndarray]:
  """encode(images) -> {name: array}, BATCH images a call, the outputs joined on the image axis."""
  parts = [encode(images[i:i + BATCH]) for i in range(0, len(images), BATCH)]
  return {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]}


@pytest.mark.slow  # ~1.1B-parameter reference and port on CPU: minutes
# A worker peaked at 14.4 GB and was OOM-killed beside another in make test-slow on a 24 GiB box:
# run by hand (`pytest -s -m bigmem tests/tokenizers_port/test_seed_official.py`), alone: 5 min 25 s
# and 9.5 GB peak on a 2-core AVX-512 box (2026-12-03), codes 1,376 of 1,376 equal.
@pytest.mark.bigmem
def test_official_sizes_match_reference(tmp_path):
  import jax
  photos = photographs(ref.OFFICIAL.img_size)
  calibration = np.arange(1, 9, 2)
  calib = ref.normalize(photos[calibration])
  test = ref.normalize(np.delete(photos, calibration, axis=0))
  model = ref.build(ref.OFFICIAL, seed=3)
  ref.calibrate_codebook(model, calib)
  want = in_batches(functools.partial(ref.encode, model), test)
  want_embed = ref.embed_codes(model, want["codes"])
  codebook = model.quantize.embedding.weight.detach().numpy().copy()
  seed_ckpt, vit_ckpt = str(tmp_path / "seed_quantizer.pt"), str(tmp_path / "eva_vit_g.pth")
  ref.save_released_layout(model, seed_ckpt, vit_ckpt)
  del model
  gc.collect()
  # The released defaults: 39 ViT blocks of 16 heads, 12 Q-Former and 12 blocks_image heads.
  convert.main(["--torch-checkpoint", seed_ckpt, "--vit-checkpoint", vit_ckpt,
                "--out", str(tmp_path / "flax")])
  tok = load(str(tmp_path / "flax"))
  cfg = tok.config
  assert (cfg.vit_width, cfg.vit_depth, cfg.vit_heads, cfg.vit_mlp_dim) == (1408, 39, 16, 6144)
  assert cfg.cross_attention_layers == (0, 2, 4, 6, 8, 10) and cfg.image_size == 224
  with jax.default_matmul_precision("highest"):
    got = in_batches(tok.encode_features, test)
    got_embed = np.asarray(tok.embed_codes(want["codes"]))
  rel = lambda a, b: np.abs(a - b).max() / np.abs(b).max()  # noqa: E731
  assert rel(got["query"], want["query"]) <= 1e-4
  assert rel(got["latents"], want["z"]) <= 1e-4
  assert rel(got_embed, want_embed) <= 1e-4
  g, w = got["codes"].reshape(-1), want["codes"].reshape(-1)
  z = want["z"].reshape(-1, 32).astype(np.float64)
  e = codebook.astype(np.float64)
  d = (z * z).sum(1)[:, None] + (e * e).sum(1)[None] - 2 * z @ e.T
  rows = np.arange(len(g))
  tie = np.abs(d[rows, g] - d[rows, w]) <= 1e-5 * d[rows, w]
  print(f"official SEED-2, {len(test)} photographs: codes equal {(g == w).mean():.4%} ({(g == w).sum()} of "
        f"{len(g)}; {(tie & (g != w)).sum()} unequal float32 ties); relative error: query "
        f"{rel(got['query'], want['query']):.2e}, latents {rel(got['latents'], want['z']):.2e}, "
        f"embedding {rel(got_embed, want_embed):.2e}")
  assert ((g == w) | tie).all() and (g == w).mean() >= 0.999
