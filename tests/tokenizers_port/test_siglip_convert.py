"""SigLIP vision tower port vs two independent oracles, on the tiny preset (62 px, patch 14: a
4 x 4 grid with a 6-pixel remainder, as So400m/14 at 384 px has):
- transformers' PyTorch SiglipVisionModel / SiglipModel, random init with every tensor perturbed
  so that each one matters, save_pretrained, converted by the CLI;
- big_vision's own ViT (vendored in big_vision_reference/), random init in flax linen, written as a
  big_vision .npz (per-block and scanned encoders), converted by the CLI.
Both are fed the same pixels as ours: real photographs (scikit-image) through SiglipImageProcessor.
"""

import json
import os
import shutil

import numpy as np
import pytest

from big_vision_reference import utils as bv_utils  # tests/tokenizers_port/big_vision_reference
from big_vision_reference import vit as bv_vit
from siglip_oracles import (OFFICIAL_HF, bv_model, bv_random_params, hf_outputs, hf_pixels,
                            hf_vision_config, native_photos, perturb_torch, rel_err, save_big_vision_npz)
from tokenizers_port import convert as convert_cli
from tokenizers_port.siglip import PRESETS, SiglipConfig, load
from tokenizers_port.siglip.preprocess import normalize, normalize_table, pixel_values
from tokenizers_port.vqgan.reference import photographs

TINY = PRESETS["tiny"]


@pytest.fixture(scope="module")
def hf_pair(tmp_path_factory):
  import jax
  import torch
  from transformers import SiglipConfig, SiglipModel
  torch.manual_seed(0)
  text = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
              num_attention_heads=4, bos_token_id=1, eos_token_id=2, pad_token_id=0)
  full = SiglipModel(SiglipConfig(vision_config=hf_vision_config(TINY), text_config=text)).eval()
  perturb_torch(full, 0)
  d = tmp_path_factory.mktemp("siglip_hf")
  full.save_pretrained(d / "full")  # keys vision_model.* beside text_model.*, logit_scale/bias
  full.vision_model.save_pretrained(d / "vision")  # a SiglipVisionModel folder: bare keys
  for name in ("full", "vision"):
    convert_cli.main(["siglip", "--hf", str(d / name), "--out", str(d / f"{name}_flax")])
  enc = load(str(d / "vision_flax"))
  photos = photographs(96)[::5][:8]  # resized 96 -> 62 by both sides
  want = hf_outputs(full.vision_model, hf_pixels(photos, TINY.image_size))
  with jax.default_matmul_precision("highest"):
    got = np.asarray(enc.encode_patches(photos)), np.asarray(enc.encode_pooled(photos))
  return {"model": full.vision_model, "enc": enc, "dir": d, "photos": photos, "want": want, "got": got}


def test_patches_and_pooled_match_transformers(hf_pair):
  (got, got_pool), (want, want_pool) = hf_pair["got"], hf_pair["want"]
  assert got.shape == want.shape == (8, 16, 64) and got.dtype == np.float32
  print(f"\ntiny vs transformers: patches max rel err {rel_err(got, want):.2e}, "
        f"pooled {rel_err(got_pool, want_pool):.2e}")
  assert rel_err(got, want) <= 1e-4
  assert got_pool.shape == want_pool.shape == (8, 64)
  assert rel_err(got_pool, want_pool) <= 1e-4
  assert np.abs(want[0] - want[1]).max() > 0.1 * np.abs(want).max()  # the photos differ


def test_images_of_any_size_as_a_list(hf_pair):
  import jax
  images = native_photos()
  want, _ = hf_outputs(hf_pair["model"], hf_pixels(images, TINY.image_size))
  with jax.default_matmul_precision("highest"):
    got = np.asarray(hf_pair["enc"].encode_patches(images))
  assert rel_err(got, want) <= 1e-4


def test_full_siglip_model_folder_gives_the_same_tower(hf_pair):
  from safetensors.numpy import load_file
  d = hf_pair["dir"]
  full, vision = (load_file(str(d / f"{n}_flax" / "params.safetensors")) for n in ("full", "vision"))
  # embeddings 3, 2 layers of 16, post_layernorm 2, MAP head 15
  assert sorted(full) == sorted(vision) and len(full) == 3 + 2 * 16 + 2 + 15
  for k in full:
    np.testing.assert_array_equal(full[k], vision[k])
  assert json.loads((d / "full_flax" / "config.json").read_text()) == \
      json.loads((d / "vision_flax" / "config.json").read_text())


def test_sharded_bf16_folder_reads_as_torch_does(hf_pair, tmp_path):
  """A folder of bf16 shards behind model.safetensors.index.json (as large checkpoints ship)."""
  import torch
  from safetensors.numpy import load_file
  from safetensors.torch import save_file
  src = hf_pair["dir"] / "vision"
  sd = {k: v.to(torch.bfloat16) for k, v in hf_pair["model"].state_dict().items()}
  keys = sorted(sd)
  folder = tmp_path / "sharded"
  folder.mkdir()
  shutil.copy(src / "config.json", folder / "config.json")
  shards = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
  for name, part in shards.items():
    save_file({k: sd[k].contiguous() for k in part}, str(folder / name))
  index = {"metadata": {}, "weight_map": {k: n for n, part in shards.items() for k in part}}
  (folder / "model.safetensors.index.json").write_text(json.dumps(index))
  convert_cli.main(["siglip", "--hf", str(folder), "--out", str(tmp_path / "flax")])
  got = load_file(str(tmp_path / "flax" / "params.safetensors"))
  want = sd["encoder.layers.1.mlp.fc1.weight"].float().numpy().T
  np.testing.assert_array_equal(got["encoder.layers.1.mlp.fc1.kernel"], want)
  assert len(got) == 52


def test_preprocess_equals_siglip_image_processor():
  """Our numpy policy and the jitted lookup table are bit-exact against SiglipImageProcessor (PIL
  backend: what transformers uses without torchvision) for shrinking, enlarging and squashing."""
  import jax.numpy as jnp
  big = photographs(96)[:4]
  wide = np.concatenate([big, big[:, :, :40]], axis=2)  # 96 x 136: squashed, not cropped
  small = np.ascontiguousarray(big[:, :40, :50])  # enlarged
  for size in (TINY.image_size, 224, 384):
    cfg = SiglipConfig(image_size=size, patch_size=14)
    for images in (big, wide, small, native_photos()):
      want = hf_pixels(images, size).transpose(0, 2, 3, 1)
      got = pixel_values(images, cfg)
      assert got.dtype == np.float32 and got.shape == want.shape == (len(images), size, size, 3)
      np.testing.assert_array_equal(got, want)
  levels = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, axis=-1)
  table = normalize_table(TINY)
  np.testing.assert_array_equal(np.asarray(normalize(jnp.asarray(levels), table)),
                                hf_pixels(levels, 16).transpose(0, 2, 3, 1))


def test_official_hf_configs_give_the_presets(tmp_path):
  """The released config.json / preprocessor_config.json (omitted keys = SiglipVisionConfig's
  defaults) convert to our So400m/14-384 and B/16-224 presets."""
  from tokenizers_port.siglip import convert
  for preset, (config, processor) in OFFICIAL_HF.items():
    d = tmp_path / preset.replace("/", "_")
    d.mkdir()
    (d / "config.json").write_text(json.dumps(config))
    (d / "preprocessor_config.json").write_text(json.dumps(processor))
    vision = convert.hf_vision_config(str(d / "config.json"))
    cfg = SiglipConfig(**vision, **convert.hf_image_policy(str(d), vision["image_size"]))
    assert cfg == PRESETS[preset], preset
  assert PRESETS["So400m/14-384"].num_patches == 729 and PRESETS["B/16-224"].num_patches == 196


@pytest.fixture(scope="module", params=["params/img pyloop", "img scanned"])
def bv_pair(request, tmp_path_factory):
  import jax
  scan = request.param.endswith("scanned")
  photos = photographs(TINY.image_size)[1::6][:6]
  x = pixel_values(photos, TINY)
  model = bv_model(TINY, scan)
  params = bv_random_params(model, x, seed=2)
  with jax.default_matmul_precision("highest"):
    _, out = model.apply({"params": params}, x)
  d = tmp_path_factory.mktemp("siglip_bv")
  path = str(d / "siglip.npz")
  # A two-tower checkpoint: the image tower beside a (dummy) text tower and the temperature.
  towers = {"img": params, "txt": {"Embed_0": {"embedding": np.ones((5, 4), np.float32)}},
            "t": np.zeros(1, np.float32)}
  save_big_vision_npz({"params": towers} if not scan else towers, path)
  # The file is a big_vision checkpoint by big_vision's own loader.
  restored = bv_vit.load(None, path + ":img", {"scan": scan})
  assert jax.tree.all(jax.tree.map(np.array_equal, restored, jax.tree.map(np.asarray, params)))
  flax_dir = str(d / "flax")
  convert_cli.main(["siglip", "--big-vision", path, "--res", str(TINY.image_size), "--out", flax_dir])
  return {"out": out, "photos": photos, "x": x, "path": path, "flax": flax_dir}


# big_vision's reference model builds and runs in linen for both layouts (~15 s on 2 cores): the
# big_vision path is in the slow set; the transformers path stays in the default run.
@pytest.mark.slow
def test_big_vision_encoded_and_map_head_match(bv_pair):
  import jax
  enc = load(bv_pair["flax"])
  assert enc.config.num_hidden_layers == 2 and enc.config.vision_use_head
  want, want_pool = np.asarray(bv_pair["out"]["encoded"]), np.asarray(bv_pair["out"]["head_input"])
  np.testing.assert_array_equal(want.reshape(6, 4, 4, -1), bv_pair["out"]["pre_logits_2d"])
  with jax.default_matmul_precision("highest"):
    got = np.asarray(enc.encode_pixel_values(bv_pair["x"]))
    from_uint8 = np.asarray(enc.encode_patches(bv_pair["photos"]))
    got_pool = np.asarray(enc.encode_pooled(bv_pair["photos"]))
  assert got.shape == want.shape == (6, 16, 64)
  print(f"\ntiny vs big_vision: patches max rel err {rel_err(got, want):.2e}, "
        f"pooled {rel_err(got_pool, want_pool):.2e}")
  assert rel_err(got, want) <= 1e-4
  np.testing.assert_array_equal(from_uint8, got)  # same pixels through the jitted table
  assert rel_err(got_pool, want_pool) <= 1e-4


def test_bfloat16_npz_reads_as_big_vision_does(tmp_path):
  import ml_dtypes
  from tokenizers_port.siglip.checkpoint_files import read_npz
  a = np.linspace(-3, 3, 12, dtype=np.float32).reshape(3, 4).astype(ml_dtypes.bfloat16)
  path = str(tmp_path / "bf16.npz")
  np.savez(path, **{"img/pos_embedding": a})
  want = bv_utils.load_params(path)["img"]["pos_embedding"]  # recover_dtype: void -> bfloat16
  got = read_npz(path)["img/pos_embedding"]
  assert got.dtype == np.float32
  np.testing.assert_array_equal(got, np.asarray(want, np.float32))


def _cli_error(args) -> str:
  with pytest.raises(SystemExit) as e:
    convert_cli.main(["siglip"] + args)
  msg = str(e.value)
  assert msg.startswith("error: ") and "\n" not in msg, msg
  return msg


def _edit_safetensors(src_dir, dst_dir, edit):
  from safetensors.numpy import load_file, save_file
  shutil.copytree(src_dir, dst_dir)
  sd = load_file(os.path.join(src_dir, "model.safetensors"))
  edit(sd)
  save_file(sd, os.path.join(dst_dir, "model.safetensors"))
  return os.path.join(dst_dir, "model.safetensors")


@pytest.mark.parametrize("case", ["no_weights", "no_config", "shape", "unknown", "missing", "corrupt"])
def test_bad_hf_folder_is_a_one_line_error_naming_file_and_key(hf_pair, tmp_path, case):
  src, bad = str(hf_pair["dir"] / "vision"), str(tmp_path / "bad")
  key = "encoder.layers.1.mlp.fc1.weight"
  if case == "no_weights":
    shutil.copytree(src, bad, ignore=shutil.ignore_patterns("*.safetensors"))
    named = [os.path.join(bad, "model.safetensors")]
  elif case == "no_config":
    shutil.copytree(src, bad, ignore=shutil.ignore_patterns("config.json"))
    named = [os.path.join(bad, "config.json")]
  elif case == "shape":
    named = [_edit_safetensors(src, bad, lambda sd: sd.__setitem__(key, np.zeros((176, 63), np.float32))),
             key, "(176, 63)"]
  elif case == "unknown":
    key = "encoder.layers.1.extra.weight"
    named = [_edit_safetensors(src, bad, lambda sd: sd.__setitem__(key, np.zeros(3, np.float32))), key]
  elif case == "corrupt":  # a download cut short
    shutil.copytree(src, bad)
    path = os.path.join(bad, "model.safetensors")
    with open(path, "r+b") as f:
      f.truncate(os.path.getsize(path) // 2)
    named = [path, "not a readable safetensors file"]
  else:
    key = "post_layernorm.bias"
    named = [_edit_safetensors(src, bad, lambda sd: sd.pop(key)), key]
  msg = _cli_error(["--hf", bad, "--out", str(tmp_path / "o")])
  assert all(n in msg for n in named), msg
  assert not (tmp_path / "o").exists()


@pytest.mark.slow  # the big_vision fixture (above)
@pytest.mark.parametrize("case", ["missing", "shape", "res", "variant", "no_tower"])
def test_bad_big_vision_checkpoint_is_a_one_line_error(bv_pair, tmp_path, case):
  with np.load(bv_pair["path"]) as f:
    sd = dict(f)
  prefix = "params/img/" if "params/img/embedding/kernel" in sd else "img/"
  args = ["--res", str(TINY.image_size)]
  key = prefix + "Transformer/encoder_norm/scale"
  if case == "missing":
    sd.pop(key)
  elif case == "shape":
    sd[key] = np.zeros(63, np.float32)
  elif case == "res":
    args, key = ["--res", "80"], prefix + "pos_embedding"
  elif case == "variant":
    args, key = args + ["--variant", "So400m/14"], prefix + "embedding/kernel"
  else:
    sd, key = {"txt/pos_embedding": np.zeros((1, 4, 8), np.float32)}, "embedding/kernel"
  path = str(tmp_path / "bad.npz")
  np.savez(path, **sd)
  msg = _cli_error(["--big-vision", path, "--out", str(tmp_path / "o")] + args)
  assert path in msg and key in msg, msg
  assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("case", ["config_key", "no_params", "param_shape"])
def test_bad_converted_folder_names_file_and_key(hf_pair, tmp_path, case):
  from safetensors.numpy import load_file, save_file
  bad = tmp_path / "flax"
  shutil.copytree(hf_pair["dir"] / "vision_flax", bad)
  if case == "config_key":
    cfg = json.loads((bad / "config.json").read_text())
    cfg["hiden_size"] = 3
    (bad / "config.json").write_text(json.dumps(cfg))
    err, named = ValueError, ["hiden_size", str(bad / "config.json")]
  elif case == "no_params":
    (bad / "params.safetensors").unlink()
    err, named = FileNotFoundError, [str(bad / "params.safetensors"), "convert siglip"]
  else:
    sd = load_file(str(bad / "params.safetensors"))
    key = "encoder.layers.0.self_attn.k_proj.kernel"
    sd[key] = np.zeros((64, 32), np.float32)
    save_file(sd, str(bad / "params.safetensors"))
    err, named = ValueError, [key, "(64, 32)"]
  with pytest.raises(err) as e:
    load(str(bad))
  assert all(n in str(e.value) for n in named) and "\n" not in str(e.value), str(e.value)


def test_bad_input_is_rejected_clearly(hf_pair):
  enc = hf_pair["enc"]
  with pytest.raises(ValueError, match=r"uint8 \[H, W, 3\]"):
    enc.encode_patches(hf_pair["photos"].astype(np.float32))
  with pytest.raises(ValueError, match=r"float \[B, 62, 62, 3\]"):
    enc.encode_pixel_values(np.zeros((1, 64, 64, 3), np.float32))


def test_mesh_split_batch_gives_the_same_patches(hf_pair):
  """conftest forces 8 CPU devices before jax starts: a 2-device data mesh, an odd batch."""
  import jax
  from jax.sharding import Mesh
  mesh = Mesh(np.array(jax.devices()[:2]), ("data",))
  sharded = load(str(hf_pair["dir"] / "vision_flax"), mesh=mesh)
  odd = hf_pair["photos"][:5]  # padded to 6 over the 2 devices, then cut back
  with jax.default_matmul_precision("highest"):
    got = sharded.encode_patches(odd)
    want = hf_pair["enc"].encode_patches(odd)
  assert got.shape == (5, 16, 64) and len(got.sharding.device_set) == 2
  # Per-device batches of 3 instead of one of 5: XLA blocks the matmuls differently (float rounding).
  assert rel_err(np.asarray(got), np.asarray(want)) <= 1e-5
