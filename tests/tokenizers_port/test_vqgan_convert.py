"""Converter + Flax VQGAN against the PyTorch references, on narrow configs of both families.

The reference is random-init, its codebook drawn from real encoder outputs (so nearest codes are
close calls), saved in the released checkpoint layout, converted by the CLI and compared.
"""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import torch

from tokenizers_port.vqgan import convert, load
from tokenizers_port.vqgan import reference as ref

SMALL = {"taming": ref.TAMING_SMALL, "llamagen": ref.LLAMAGEN_SMALL}
SIZE = 64  # The narrow configs downsample 4x: a 16x16 code grid.


@pytest.fixture(scope="module")
def photos():
  p = ref.photographs(SIZE)
  return {"calib": p[1::2], "test": p[0::2][:12]}


@pytest.fixture(scope="module", params=["taming", pytest.param("llamagen", marks=pytest.mark.slow)])
def converted(request, photos, tmp_path_factory):
  flavor = request.param
  model = ref.build(flavor, SMALL[flavor], seed=1)
  ref.calibrate_codebook(model, ref.to_nchw(photos["calib"]))
  d = tmp_path_factory.mktemp(flavor)
  ckpt = str(d / "released.ckpt")
  ref.save_released_layout(model, flavor, ckpt)
  out = str(d / "flax")
  convert.main(["--flavor", flavor, "--torch-checkpoint", ckpt, "--out", out,
                "--image-size", str(SIZE)])
  return flavor, model, out, ckpt


def test_encoder_latents_match(converted, photos):
  _, model, out, _ = converted
  x = ref.to_nchw(photos["test"])
  want = ref.latents(model, x).permute(0, 2, 3, 1).numpy()
  for impl in ("direct", "winograd"):
    with jax.default_matmul_precision("highest"):
      got = np.asarray(load(out, conv_impl=impl).encode_latents(x.permute(0, 2, 3, 1).numpy()))
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0, err_msg=impl)


@pytest.mark.slow  # decoding photos, a minute a flavour; test_encoder_latents_match stays
def test_codes_agree_and_decoder_matches(converted, photos):
  _, model, out, _ = converted
  tok = load(out)
  with jax.default_matmul_precision("highest"):
    got = np.asarray(tok.encode(photos["test"]))
  want = ref.codes(model, ref.to_nchw(photos["test"])).numpy()
  assert got.shape == want.shape == (len(photos["test"]), 256) and got.dtype == np.int32
  agreement = (got == want).mean()
  assert agreement >= 0.999, agreement
  # The codebook spread is realistic: many distinct codes are in use.
  assert len(np.unique(want)) > 100
  # Decoder on the reference's codes.
  want_img = ref.decode_codes(model, torch.from_numpy(want), 16, 16).permute(0, 2, 3, 1).numpy()
  with jax.default_matmul_precision("highest"):
    got_img = np.asarray(tok.decode_float(want))
    got_u8 = np.asarray(tok.decode(want))
  np.testing.assert_allclose(got_img, want_img, atol=1e-4, rtol=0)
  assert got_u8.dtype == np.uint8 and got_u8.shape == (len(want), SIZE, SIZE, 3)
  want_u8 = np.round((np.clip(want_img, -1, 1) + 1) * 127.5)
  assert np.abs(got_u8.astype(int) - want_u8).max() <= 1


@pytest.mark.slow  # a second conversion through the CLI (~5 s on 2 cores); the converter's agreement stays
def test_cli_entry_point(converted, tmp_path):
  flavor, _, out, ckpt = converted
  if flavor != "taming":
    pytest.skip("one subprocess run covers the dispatch")
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  r = subprocess.run([sys.executable, "-m", "tokenizers_port.convert", "vqgan", "--flavor", flavor,
                      "--torch-checkpoint", ckpt, "--out", str(tmp_path / "cli")],
                     capture_output=True, text=True, env=env, cwd=os.getcwd())
  assert r.returncode == 0, r.stderr
  assert "512 codes x 32" in r.stdout
  for name in ("config.json", "params.safetensors"):
    with open(os.path.join(out, name), "rb") as a, open(tmp_path / "cli" / name, "rb") as b:
      if name == "config.json":  # Only the image size flag differs.
        assert a.read().replace(b'"image_size": 64', b'"image_size": 256') == b.read()
      else:
        assert a.read() == b.read()


def _edit_checkpoint(ckpt, flavor, edit, tmp_path):
  c = torch.load(ckpt, weights_only=False)
  edit(c["state_dict" if flavor == "taming" else "model"])
  path = str(tmp_path / "edited.ckpt")
  torch.save(c, path)
  return path


def _first_key(flavor):
  return "encoder.down.0.block.0.conv1.weight" if flavor == "taming" else \
      "encoder.conv_blocks.0.res.0.conv1.weight"


@pytest.mark.parametrize("case", ["unknown", "missing", "shape"])
def test_bad_checkpoint_names_the_key(converted, tmp_path, case):
  flavor, _, _, ckpt = converted
  key = _first_key(flavor)
  if case == "unknown":
    key = "decoder.extra_head.weight"
    edit = lambda sd: sd.__setitem__(key, torch.zeros(3))
  elif case == "missing":
    key = key.replace("conv1.weight", "conv2.bias")
    edit = lambda sd: sd.pop(key)
  else:
    key = key.replace("conv1.weight", "norm2.weight")
    edit = lambda sd: sd.__setitem__(key, torch.zeros(7))
  path = _edit_checkpoint(ckpt, flavor, edit, tmp_path)
  with pytest.raises(SystemExit) as e:
    convert.main(["--flavor", flavor, "--torch-checkpoint", path, "--out", str(tmp_path / "o")])
  assert key in str(e.value) and path in str(e.value)
  assert not (tmp_path / "o").exists()


def test_wrong_flavor_and_missing_weights_field(converted, tmp_path):
  flavor, _, _, ckpt = converted
  other = "llamagen" if flavor == "taming" else "taming"
  with pytest.raises(SystemExit, match="'model'|'state_dict'"):
    convert.main(["--flavor", other, "--torch-checkpoint", ckpt, "--out", str(tmp_path / "o")])
  if flavor == "llamagen":
    with pytest.raises(SystemExit, match="'ema'"):
      convert.main(["--flavor", flavor, "--weights", "ema", "--torch-checkpoint", ckpt,
                    "--out", str(tmp_path / "o")])


def test_loss_keys_are_dropped_and_config_read_off_shapes(converted):
  flavor, model, out, ckpt = converted
  sd = torch.load(ckpt, weights_only=False)
  if flavor == "taming":
    assert any(k.startswith("loss.") for k in sd["state_dict"])
  cfg = load(out).config
  assert cfg.flavor == flavor and cfg.n_embed == model.quantize.n_e
  assert cfg.embed_dim == model.quantize.e_dim and cfg.encoder_ch_mult == (1, 2, 2)
  assert cfg.l2_norm == (flavor == "llamagen")
  # taming attends at 32 px (level 1); LlamaGen always at the last level.
  assert cfg.encoder_attn_levels == ((1,) if flavor == "taming" else (2,))
  assert cfg.num_res_blocks == (1 if flavor == "taming" else 2)
