"""The official SigLIP vision towers at full size, random weights: So400m/14 at 384 px (~428M
parameters, 729 patches) and B/16 at 224 px (~93M), against transformers' PyTorch
SiglipVisionModel built from the released vision_config (save_pretrained, converted by the CLI), and
So400m/14 against big_vision's own ViT (converted with --variant So400m/14 --res 384). Real
photographs at their own sizes, resized by SiglipImageProcessor for the references and by our
policy for the port (bit-identical pixels, test_siglip_convert.py checks). Same assertions as the
tiny-preset tests."""

import gc
import time

import numpy as np
import pytest

from siglip_oracles import (bv_model, bv_random_params, hf_outputs, hf_pixels, native_photos,
                            official_vision_config, perturb_torch, rel_err, save_big_vision_npz)
from tokenizers_port import convert as convert_cli
from tokenizers_port.siglip import PRESETS, load
from tokenizers_port.siglip.preprocess import pixel_values


def _photos():
  from skimage import data
  return native_photos() + [data.rocket()]  # 512x512, 400x600, 300x451, 427x640


@pytest.mark.slow  # So400m/14-384: ~428M-parameter reference and port on CPU, minutes and ~8 GB
@pytest.mark.parametrize("preset", ["So400m/14-384", "B/16-224"])
def test_official_config_matches_transformers(preset, tmp_path):
  import jax
  import torch
  from transformers import SiglipVisionConfig, SiglipVisionModel
  cfg = PRESETS[preset]
  torch.manual_seed(1)
  model = SiglipVisionModel(SiglipVisionConfig(**official_vision_config(preset))).eval()
  perturb_torch(model, 1)
  model.save_pretrained(tmp_path / "hf")
  photos = _photos()
  t = time.perf_counter()
  want, want_pool = hf_outputs(model, hf_pixels(photos, cfg.image_size))
  t_torch = time.perf_counter() - t
  del model
  gc.collect()
  convert_cli.main(["siglip", "--hf", str(tmp_path / "hf"), "--out", str(tmp_path / "flax")])
  enc = load(str(tmp_path / "flax"))
  assert enc.config == cfg  # the preset's numbers, read off the released config and the shapes
  with jax.default_matmul_precision("highest"):
    t = time.perf_counter()
    got = np.asarray(enc.encode_patches(photos))
    t_first = time.perf_counter() - t  # resize + compile + run
    t = time.perf_counter()
    np.asarray(enc.encode_patches(photos))
    t_ours = time.perf_counter() - t
    got_pool = np.asarray(enc.encode_pooled(photos))
  assert got.shape == want.shape == (4, cfg.num_patches, cfg.hidden_size)
  err, err_pool = rel_err(got, want), rel_err(got_pool, want_pool)
  print(f"\n{preset}: patches max rel err {err:.2e}, pooled {err_pool:.2e}; torch {t_torch:.1f} s, "
        f"ours {t_ours:.1f} s ({t_first:.1f} s with compile) for 4 images")
  assert err <= 1e-4 and err_pool <= 1e-4


@pytest.mark.slow  # big_vision So400m/14 init and apply at 384 px in flax linen on CPU: minutes, ~8 GB
def test_official_big_vision_so400m_matches(tmp_path):
  import jax
  cfg = PRESETS["So400m/14-384"]
  photos = _photos()[:2]
  x = pixel_values(photos, cfg)
  model = bv_model(cfg, scan=False)  # the released SigLIP checkpoints: per-block, pool_type "map"
  params = bv_random_params(model, x, seed=3)
  with jax.default_matmul_precision("highest"):
    _, out = jax.jit(lambda p, x: model.apply({"params": p}, x))(params, x)
  want, want_pool = np.asarray(out["encoded"]), np.asarray(out["head_input"])
  path = str(tmp_path / "webli_en_so400m_384.npz")
  save_big_vision_npz({"params": {"img": params, "t": np.zeros(1, np.float32)}}, path)
  del params, out
  gc.collect()
  convert_cli.main(["siglip", "--big-vision", path, "--variant", "So400m/14", "--res", "384",
                    "--out", str(tmp_path / "flax")])
  enc = load(str(tmp_path / "flax"))
  assert enc.config == cfg
  with jax.default_matmul_precision("highest"):
    got = np.asarray(enc.encode_patches(photos))
    got_pool = np.asarray(enc.encode_pooled(photos))
  err, err_pool = rel_err(got, want), rel_err(got_pool, want_pool)
  print(f"\nbig_vision So400m/14-384: patches max rel err {err:.2e}, pooled {err_pool:.2e}")
  assert got.shape == (2, 729, 1152) and err <= 1e-4 and err_pool <= 1e-4
