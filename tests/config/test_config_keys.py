"""One config tree, strictly checked: an unknown or a missing key is one line naming it."""

import dataclasses
import os
import subprocess
import sys

import pytest
from fake_devices import cpu_devices

import configs.tokenize as tokenize_config
from configs.base import stage_config
from mio_jax.config.keys import ConfigError
from mio_jax.config.tokenize_job import check_tokenize_config_keys
from mio_jax.config.training import ModelSection, VocabSection, check_config_keys
from mio_jax.model.transformer import KERNEL_KEYS, ModelConfig
from mio_jax.tokenize.media import MediaConfig
from mio_jax.train.validate import validate
from mio_jax.vocab import VOCAB_KEYS, Vocabulary

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SECTIONS = ("", "model", "vocab", "data", "data.sources.text", "optimizer", "train", "eval", "mesh",
            "mesh.ici", "mesh.dcn", "sharding")


def smoke():
  return stage_config(2, "smoke")


def section(config, path: str):
  for name in filter(None, path.split(".")):
    config = config[name]
  return config


def key(path: str, name: str) -> str:
  return ".".join(["config"] + [p for p in path.split(".") if p] + [name])


def one_line_error(check, config) -> str:
  with pytest.raises(ConfigError) as info:
    check(config)
  assert "\n" not in str(info.value)
  return str(info.value)


@pytest.mark.parametrize("path", SECTIONS)
def test_an_unknown_key_in_each_section_is_named(path):
  c = smoke()
  section(c, path)["colour"] = 1
  assert one_line_error(check_config_keys, c).startswith(f"{key(path, 'colour')} is not a known key (")


@pytest.mark.parametrize("path", SECTIONS)
def test_a_missing_key_in_each_section_is_named(path):
  c = smoke()
  first = sorted(section(c, path).keys())[0]
  del section(c, path)[first]
  assert one_line_error(check_config_keys, c) == f"{key(path, first)} is missing"


@pytest.mark.parametrize("path,typo,meant", [
    ("data", "streems", "streams"), ("model", "loss_chunks", "loss_chunk"),
    ("data.sources.image_text", "weigth", "weight"), ("train", "log_evry", "log_every"),
    ("", "init_frm", "init_from")])
def test_a_typo_names_the_key_meant(path, typo, meant):
  c = smoke()
  section(c, path)[typo] = 1
  assert one_line_error(check_config_keys, c) == (
      f"{key(path, typo)} is not a known key (did you mean {key(path, meant)}?)")


def test_a_key_with_no_close_match_lists_the_section():
  c = smoke()
  c.sharding.placement = "auto"
  assert one_line_error(check_config_keys, c) == (
      "config.sharding.placement is not a known key (config.sharding has rules)")


def test_a_missing_model_key_with_a_dataclass_default_is_still_missing():
  c = smoke()
  del c.model["loss_chunk"]  # ModelConfig defaults it to 0; a training config names it
  assert one_line_error(check_config_keys, c) == "config.model.loss_chunk is missing"


def test_optional_attention_blocks_are_checked_when_given():
  c = smoke()
  c.model.attention_blocks = {"block_q": 128}
  check_config_keys(c)
  c.model.attention_blocks = {"block_k": 64}
  assert one_line_error(check_config_keys, c) == ("config.model.attention_blocks.block_k is not a "
                                                  "known key (did you mean "
                                                  "config.model.attention_blocks.block_kv?)")


def test_a_section_that_is_a_value_is_named():
  c = smoke().to_dict()  # a ConfigDict keeps a section's type; a plain dict tree does not
  c["mesh"]["ici"] = 8
  assert one_line_error(check_config_keys, c) == "config.mesh.ici=8 must be a group of keys"


@pytest.mark.parametrize("stage", [1, 2, 3, 4])
@pytest.mark.parametrize("size", ["", "1b", "40m", "smoke"])
def test_every_training_preset_passes(stage, size):
  check_config_keys(stage_config(stage, size))


@pytest.mark.parametrize("preset", ["mini", *tokenize_config.KINDS, *tokenize_config.TFDS])
def test_every_tokenize_preset_passes(preset):
  check_tokenize_config_keys(tokenize_config.get_config(preset))


def test_validate_checks_keys_first():
  c = smoke()
  c.data.streems = 4
  c.data.global_batch = 6  # a value error too: the key is reported first
  with pytest.raises(ConfigError, match=r"^config.data.streems is not a known key"):
    validate(c, cpu_devices(8))


def test_a_minimal_config_is_refused_not_filled_with_mios_mixture():
  """It used to train on MIO's stage mixture, taken from the full preset, without a word."""
  c = smoke()
  c.data = {"seq_len": 512, "global_batch": 8, "seed": 0}
  assert one_line_error(lambda c: validate(c, cpu_devices(8)), c) == "config.data.source is missing"


def test_model_sections_keys_are_model_config_and_kernel_keys():
  model_fields = [f.name for f in dataclasses.fields(ModelConfig)]
  assert [f.name for f in dataclasses.fields(ModelSection)] == model_fields + list(KERNEL_KEYS)
  assert {f.name for f in dataclasses.fields(VocabSection)} == set(VOCAB_KEYS)


def test_model_config_from_config_is_strict_but_takes_saved_partial_configs():
  m = smoke().model.to_dict()
  assert ModelConfig.from_config(m).loss_chunk == 0
  assert ModelConfig.from_config(dict(m, attention_blocks={"block_q": 128})) == ModelConfig.from_config(m)
  with pytest.raises(ConfigError, match=r"^config.model.loss_chunck is not a known key \(did you mean "
                                        r"config.model.loss_chunk\?\)$"):
    ModelConfig.from_config(dict(m, loss_chunck=8))
  del m["embed_dim"]
  with pytest.raises(ConfigError, match=r"^config.model.embed_dim is missing$"):
    ModelConfig.from_config(m)
  # A model_config.json written before a field existed: the field's default.
  sizes = dict(vocab_size=64, embed_dim=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8,
               mlp_dim=64)
  assert ModelConfig.from_config(sizes) == ModelConfig(**sizes)


def test_vocabulary_from_config_names_an_unknown_key():
  v = dict(smoke().vocab.to_dict(), text_model="", code_order="image_first")  # from_init: resolved by training
  assert Vocabulary.from_config(v).size == 13294
  with pytest.raises(ConfigError, match=r"^config.vocab.image_code is not a known key \(did you mean "
                                        r"config.vocab.image_codes\?\)$"):
    Vocabulary.from_config(dict(v, image_code=8192))


def test_tokenize_config_unknown_and_missing_keys():
  c = tokenize_config.get_config("mini")
  check_tokenize_config_keys(c)
  c.media.image_size = 128  # optional: the image tokenizer's side replaces it
  check_tokenize_config_keys(c)
  # image_resize, like image_size, is the image tokenizer's (optional, absent from the preset)
  assert {f.name for f in dataclasses.fields(MediaConfig)} == set(c.media.keys()) | {"image_resize"}
  c.media.num_frame = 4
  assert one_line_error(check_tokenize_config_keys, c) == (
      "config.media.num_frame is not a known key (did you mean config.media.num_frames?)")
  c = tokenize_config.get_config("mini")
  del c["shard_size"]
  assert one_line_error(check_tokenize_config_keys, c) == "config.shard_size is missing"


def test_tokenize_job_refuses_a_bad_key_before_any_work(tmp_path):
  from mio_jax.tokenize import job
  c = tokenize_config.get_config("mini")
  c.output_dir = str(tmp_path / "out")
  c.media.speech_max_seconds = 10.0
  with pytest.raises(ConfigError, match=r"^config.media.speech_max_seconds is not a known key"):
    job.run(c, encoder_pair=(None, None))
  assert not os.path.exists(tmp_path / "out")


def test_train_cli_reports_a_bad_key_in_one_line(tmp_path):
  """A config file with a key the schema lacks fails before anything compiles."""
  bad = tmp_path / "bad_config.py"
  bad.write_text("from configs.base import stage_config\n\n\ndef get_config(arg=''):\n"
                 "  c = stage_config(2, 'smoke')\n  c.data.streems = 4\n  return c\n")
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
  proc = subprocess.run([sys.executable, "launch/train.py", f"--config={bad}", f"--workdir={tmp_path}/run"],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0
  assert proc.stderr.strip().splitlines()[-1] == (
      "config error: config.data.streems is not a known key (did you mean config.data.streams?)")
  assert not os.path.exists(tmp_path / "run" / "checkpoints")
