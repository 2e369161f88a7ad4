"""The tokenizer API around the model: image policy, mesh sharding, input checks."""

import dataclasses

import jax
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tokenizers_port.vqgan import convert, load
from tokenizers_port.vqgan import reference as ref
from tokenizers_port.vqgan.config import VQGANConfig, load_config, save_config
from tokenizers_port.vqgan.preprocess import preprocess


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
  d = tmp_path_factory.mktemp("api")
  model = ref.build("taming", ref.TAMING_SMALL, seed=3)
  ref.calibrate_codebook(model, ref.to_nchw(ref.photographs(64)[1::4]))
  ref.save_released_layout(model, "taming", str(d / "ckpt"))
  convert.main(["--flavor", "taming", "--torch-checkpoint", str(d / "ckpt"), "--out",
                str(d / "flax"), "--image-size", "64"])
  return model, str(d / "flax")


def test_resize_shorter_side_then_centre_crop_matches_torch():
  # A smooth photo-like image, 96 x 150: shorter side to 64 -> 64 x 100, crop columns 18..82.
  img = ref.photographs(150)[3][27:123]
  cfg = VQGANConfig(flavor="taming", image_size=64)
  got = np.asarray(preprocess(img[None], cfg))[0]
  t = torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1)[None]
  want = F.interpolate(t, size=(64, 100), mode="bicubic", antialias=True, align_corners=False)
  want = want.round().clamp(0, 255)[0].permute(1, 2, 0).numpy()[:, 18:82] / 127.5 - 1
  assert got.shape == (64, 64, 3)
  # jax's and torch's antialiased cubic kernels differ slightly in support at the edges.
  assert np.abs(got - want).mean() < 2 / 127.5, np.abs(got - want).mean()


def test_no_resize_no_crop_is_identity_scaling():
  img = np.random.default_rng(1).integers(0, 256, (2, 32, 48, 3), dtype=np.uint8)
  cfg = VQGANConfig(flavor="taming", image_size=64, resize="none", crop="none")
  np.testing.assert_allclose(np.asarray(preprocess(img, cfg)), img / 127.5 - 1, atol=1e-6)
  with pytest.raises(ValueError, match="multiples of 16"):
    preprocess(img[:, :30], cfg)


def test_config_round_trip_and_bad_key(tmp_path):
  cfg = VQGANConfig(flavor="llamagen", n_embed=7, embed_dim=8, l2_norm=True)
  save_config(cfg, str(tmp_path))
  assert load_config(str(tmp_path)) == cfg
  (tmp_path / "config.json").write_text('{"flavor": "taming", "codebook": 3}')
  with pytest.raises(ValueError, match="config.json: unknown VQGAN config key 'codebook'"):
    load_config(str(tmp_path))
  with pytest.raises(ValueError, match="resize="):
    dataclasses.replace(cfg, resize="stretch")


@pytest.mark.slow  # about a minute of VQGAN compiles
def test_mesh_sharded_encode_decode_matches_unsharded(converted):
  _, out = converted
  images = ref.photographs(64)[0:6:2]  # 3 images over 8 devices: padded to 8.
  plain = load(out)
  mesh = jax.make_mesh((jax.device_count(),), ("data",))
  sharded = load(out, mesh=mesh)
  codes = sharded.encode(images)
  np.testing.assert_array_equal(np.asarray(codes), np.asarray(plain.encode(images)))
  assert codes.shape == (3, 256)
  imgs = sharded.decode(codes)
  np.testing.assert_array_equal(np.asarray(imgs), np.asarray(plain.decode(codes)))
  assert imgs.dtype == np.uint8 and imgs.shape == (3, 64, 64, 3)
  with pytest.raises(ValueError, match="no data axis 'batch'"):
    load(out, mesh=mesh, data_axis="batch")


def test_bad_inputs_are_named(converted):
  _, out = converted
  tok = load(out)
  with pytest.raises(ValueError, match="expected uint8"):
    tok.encode(np.zeros((1, 64, 64, 3), np.float32))
  with pytest.raises(ValueError, match="not a square"):
    tok.decode(np.zeros((1, 250), np.int32))
  with pytest.raises(ValueError, match="expected integer codes"):
    tok.decode(np.zeros((1, 256), np.float32))
