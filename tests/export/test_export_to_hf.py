"""Export: a sharded orbax checkpoint -> HF Llama directory that transformers loads and agrees with."""

import json
import os

import numpy as np
import pytest

from export_helpers import (M40, M40_VOCAB, MINI_TEXT_MODEL, REPO, TINY, TINY_VOCAB, assert_logits_match,
                            launch_module, load_hf_model, random_params, run_config, save_our_checkpoint, shard_over_devices)
from mio_jax.export import mapping
from mio_jax.export.to_hf import export
from mio_jax.train.run_config import save_run_config


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  """A tiny run's workdir: params sharded over 8 devices, model_config.json beside them."""
  workdir = str(tmp_path_factory.mktemp("run"))
  params = random_params(TINY, seed=0)
  step_dir = save_our_checkpoint(workdir, shard_over_devices(params))
  save_run_config(workdir, run_config(TINY, TINY_VOCAB))
  return workdir, step_dir, params


@pytest.fixture(scope="module")
def tiny_export(tiny_run, tmp_path_factory):
  """Exported through the command line, with small shards so the index path is exercised."""
  workdir, step_dir, params = tiny_run
  out = str(tmp_path_factory.mktemp("hf"))
  launch_module("export").main(["--checkpoint", step_dir, "--out", out, "--max_shard_gb", str(300e3 / 2**30)])
  return out, params


def test_export_writes_sharded_llama_checkpoint(tiny_export):
  out, params = tiny_export
  with open(os.path.join(out, "model.safetensors.index.json")) as f:
    weight_map = json.load(f)["weight_map"]
  assert len(set(weight_map.values())) > 1  # really sharded
  with open(os.path.join(out, "config.json")) as f:
    config = json.load(f)
  assert config["architectures"] == ["LlamaForCausalLM"]
  assert (config["vocab_size"], config["num_key_value_heads"], config["rms_norm_eps"]) == (13294, 2, 1e-5)
  assert config["rope_parameters"]["rope_theta"] == 5_000_000.0
  assert not config["tie_word_embeddings"]
  assert (config["bos_token_id"], config["eos_token_id"]) == (1, [2, 7])  # EOS and <|im_end|>
  with open(os.path.join(out, "mio_jax.json")) as f:
    layout = json.load(f)
  assert layout["image"]["first_id"] == 1006 and layout["speech"]["first_id"] == 9198  # 1006 + 8192 image codes
  assert layout["speech"]["layer_order"][0].startswith("content")
  from transformers import AutoTokenizer

  from mio_jax.vocab import Vocabulary

  vocab, tok = Vocabulary.from_config(TINY_VOCAB), AutoTokenizer.from_pretrained(out)
  expected = [vocab.bos, 1005, 1006 + 3, 1004] + vocab.encode_text(" a red cube")  # verbatim, as MIO
  assert tok("<image><img3></image> a red cube").input_ids == expected


def test_exported_names_and_shapes_are_transformers_own(tiny_export):
  """Every tensor transformers' LlamaForCausalLM has, with its shape, and nothing else."""
  from transformers import LlamaConfig, LlamaForCausalLM

  out, _ = tiny_export
  reference = LlamaForCausalLM(LlamaConfig.from_pretrained(out)).state_dict()
  from mio_jax.export.safetensors_io import Reader

  reader = Reader(out)
  assert reader.names() == set(reference)
  for name, tensor in reference.items():
    assert tuple(reader.get(name).shape) == tuple(tensor.shape), name


def test_transformers_logits_match_ours_tiny(tiny_export):
  out, params = tiny_export
  assert_logits_match(params, TINY, load_hf_model(out), np.random.default_rng(1))


@pytest.mark.slow  # the tiny export stays
def test_export_40m_matches_transformers(tmp_path):
  params = random_params(M40, seed=2)
  step_dir = save_our_checkpoint(str(tmp_path / "run"), shard_over_devices(params), step=100)
  out = str(tmp_path / "hf")
  export(step_dir, out, run_config={"model": {"norm_eps": 1e-5, "rope_theta": 5e6}, "vocab": M40_VOCAB},
         with_tokenizer=False)
  assert_logits_match(params, M40, load_hf_model(out), np.random.default_rng(3), length=16)


def test_bfloat16_export_is_the_rounded_weights(tiny_run, tmp_path):
  import ml_dtypes

  from mio_jax.export.safetensors_io import Reader

  _, step_dir, params = tiny_run
  export(step_dir, str(tmp_path), with_tokenizer=False, max_shard_bytes=100_000)
  assert os.path.exists(tmp_path / "model.safetensors.index.json")
  export(step_dir, str(tmp_path), dtype="bfloat16", with_tokenizer=False)  # same dir, one file now
  assert sorted(p.name for p in tmp_path.glob("model*")) == ["model.safetensors"]  # stale shards gone
  wq = Reader(str(tmp_path)).get("model.layers.1.self_attn.q_proj.weight")
  assert wq.dtype == ml_dtypes.bfloat16
  expected = params["blocks"]["attn"]["wq"][1].reshape(TINY.embed_dim, -1).T.astype(ml_dtypes.bfloat16)
  np.testing.assert_array_equal(wq, expected)


def test_export_with_training_config_file(tiny_run, tmp_path):
  """No model_config.json needed when --config names the training config (the smoke preset is TINY)."""
  from mio_jax.export.safetensors_io import Reader

  _, step_dir, params = tiny_run
  out = str(tmp_path / "hf")
  launch_module("export").main(["--checkpoint", os.path.join(step_dir, "params"), "--out", out,
                                "--config", os.path.join(REPO, "configs", "stage4.py") + ":smoke",
                                "--text_model", MINI_TEXT_MODEL])
  np.testing.assert_array_equal(Reader(out).get("lm_head.weight"), params["lm_head"].T)


def test_missing_parameter_is_named(tmp_path):
  params = random_params(TINY, seed=4)
  del params["blocks"]["mlp"]["up"]
  step_dir = save_our_checkpoint(str(tmp_path / "run"), params)
  with pytest.raises(ValueError, match=r"parameter blocks/mlp/up is missing"):
    export(step_dir, str(tmp_path / "hf"), run_config={"model": {}, "vocab": TINY_VOCAB})


def test_wrong_shape_and_missing_config_are_named(tmp_path):
  params = random_params(TINY, seed=5)
  params["final_norm"]["scale"] = np.ones(3, np.float32)
  step_dir = save_our_checkpoint(str(tmp_path / "run"), params)
  with pytest.raises(ValueError, match=r"final_norm/scale has shape \(3,\), expected \(64,\)"):
    export(step_dir, str(tmp_path / "hf"), run_config={"model": {}, "vocab": TINY_VOCAB})
  with pytest.raises(ValueError, match="no model_config.json"):
    export(step_dir, str(tmp_path / "hf"))


def test_mapping_round_trips_each_transform():
  rng = np.random.default_rng(0)
  shapes = mapping.our_shapes(TINY)
  for entry in mapping.PARAM_MAP:
    value = rng.standard_normal(shapes[entry.ours]).astype(np.float32)
    hf = dict(mapping.to_hf_tensors(entry, value))
    assert all(t.shape == mapping.hf_shape(entry, shapes[entry.ours]) for t in hf.values())
    back = mapping.from_hf_tensors(entry, hf.__getitem__, shapes[entry.ours])
    np.testing.assert_array_equal(back, value)


def test_resolve_init_from_prefers_explicit_path():
  import ml_collections

  from mio_jax.train.run_config import resolve_init_from

  c = ml_collections.ConfigDict(dict(init_from="", runs_dir="/runs", previous_run="stage2"))
  assert resolve_init_from(c) == "/runs/stage2"
  c.init_from = "/elsewhere/run"
  assert resolve_init_from(c) == "/elsewhere/run"
  assert resolve_init_from(ml_collections.ConfigDict(dict(init_from="", runs_dir="",
                                                                previous_run="stage1"))) == ""
