"""Each config that cannot work fails before compiling, with one line naming the key."""

import os
import subprocess
import sys

import pytest
from fake_devices import cpu_devices

from configs.base import stage_config
from mio_jax.train.validate import ConfigError, validate

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def smoke():
  return stage_config(2, "smoke")


@pytest.mark.parametrize("edit,match", [
    (lambda c: c.mesh.ici.update(data=3, fsdp=1), r"^config.mesh.ici: .* uses 3 devices but there are 8$"),
    (lambda c: c.data.update(global_batch=6), r"^config.data.global_batch=6 is not divisible by data x fsdp = 8$"),
    (lambda c: c.model.update(vocab_size=5000), r"^config.model.vocab_size=5000 disagrees with the tokenizer"),
    (lambda c: c.vocab.update(text_size=999, text_model=""),
     r"^config.model.vocab_size=13294 disagrees .* \(13293 ids\)$"),
    (lambda c: c.vocab.update(text_size=999),
     r"^config.vocab.text_size=999 but data/vocab/mini.model has 1000 pieces$"),
    (lambda c: c.model.update(attention_impl="flash9"), r"^config.model.attention_impl='flash9' is unknown"),
    (lambda c: c.model.update(attention_impl="cudnn"), r"^config.model.attention_impl='cudnn' cannot train"),
    (lambda c: c.train.update(on_nonfinite="ignore"), r"^config.train.on_nonfinite='ignore' is not one of halt, skip$"),
    (lambda c: c.train.update(keep_period=-1), r"^config.train.keep_period=-1 must be 0 \(off\) or a step count$"),
    (lambda c: c.model.update(remat_policy="some"), r"^config.model.remat_policy='some' is unknown"),
    (lambda c: c.model.update(num_kv_heads=3), r"^config.model.num_heads=4 is not a multiple of num_kv_heads=3$"),
    (lambda c: c.mesh.ici.update(fsdp=1, tensor=8), r"^config.model.num_heads=4 is not divisible by the tensor axis \(8\)$"),
    (lambda c: c.model.update(num_heads=6, num_kv_heads=3) or c.mesh.ici.update(fsdp=4, tensor=2),
     r"^config.model.num_kv_heads=3 and the tensor axis \(2\) must divide one another$"),
    (lambda c: c.optimizer.update(grad_accum_steps=3), r"^config.data.global_batch=8 is not divisible by .* grad_accum_steps 3$"),
    (lambda c: c.sharding.update(rules="zero3"), r"^config.sharding.rules='zero3' is not one of"),
    (lambda c: c.update(init_from="/nonexistent/run"), r"^config.init_from='/nonexistent/run' does not exist$"),
    (lambda c: c.optimizer.update(schedule="cosine"), r"^config.optimizer.schedule='cosine' is not one of warmup_cosine, "),
    (lambda c: c.optimizer.update(schedule="warmup_stable_decay", warmup_fraction=0.5, decay_fraction=0.6),
     r"^config.optimizer.decay_fraction=0.6 and warmup_fraction=0.5 add up to more than the whole run$"),
    (lambda c: c.train.update(profile_steps=(0, 2)), r"^config.train.profile_steps=\(0, 2\) must be \(first step"),
    (lambda c: c.eval.update(batches=0), r"^config.eval.batches=0 must be at least 1$"),
    (lambda c: c.eval.update(sample_tokens=0), r"^config.eval.sample_tokens=0 must be at least 1$"),
    (lambda c: c.eval.update(every=0, samples=2),
     r"^config.eval.samples=2 needs evaluation on: set config.eval.every > 0$"),
])
def test_bad_config_names_its_key(edit, match):
  c = smoke()
  edit(c)
  with pytest.raises(ConfigError, match=match) as info:
    validate(c, cpu_devices(8))
  assert "\n" not in str(info.value)


def test_good_configs_pass_for_every_stage_and_size():
  for stage in (1, 2, 3, 4):
    for size, devices in (("", 128), ("1b", 8), ("40m", 1), ("smoke", 8)):
      c = stage_config(stage, size)
      validate(c, cpu_devices(devices))


def test_mio_7b_preset_is_exact():
  m = stage_config(1).model
  assert (m.unpadded_vocab_size, m.embed_dim, m.num_layers, m.num_heads, m.num_kv_heads, m.head_dim, m.mlp_dim,
          m.norm_eps, m.rope_theta) == (76294, 4096, 32, 32, 4, 128, 11008, 1e-5, 5_000_000.0)
  assert m.vocab_size == 76800  # padded for the hardware (mio_jax/model/vocab_padding.py)
  assert stage_config(1).data.seq_len == 2800


def test_cli_reports_a_bad_config_in_one_line_without_compiling(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu")  # XLA_FLAGS from conftest: 8 devices
  proc = subprocess.run(
      [sys.executable, "launch/train.py", "--config=configs/stage2.py:smoke", f"--workdir={tmp_path}",
       "--config.data.global_batch=6"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0
  assert proc.stderr.strip().splitlines()[-1] == (
      "config error: config.data.global_batch=6 is not divisible by data x fsdp = 8")
  assert not os.path.exists(tmp_path / "checkpoints")


def _init_checkpoint(path, vocab):
  """A run folder whose model_config.json records `vocab` (what an import or a run writes)."""
  import json
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "model_config.json"), "w") as f:
    json.dump({"model": {}, "vocab": vocab}, f)
  return str(path)


SMOKE_CODES = dict(text_size=1000, image_codes=8192, speech_codebook=1024, speech_layers=4)


def test_code_order_from_init_takes_the_init_checkpoints_layout(tmp_path, caplog):
  import json
  import logging

  from mio_jax.train.code_order import resolve_code_order, training_vocab, with_concrete_code_order
  from mio_jax.train.run_config import save_run_config

  c = stage_config(4, "smoke")
  assert c.vocab.code_order == "from_init"  # the default: no flag to train from an import
  assert resolve_code_order(c)[0] == "image_first"  # a fresh run
  c.init_from = _init_checkpoint(tmp_path / "import", dict(SMOKE_CODES, code_order="speech_first"))
  validate(c, cpu_devices(8))
  # Speech codes right after the six specials (1000 + 6), images after the 4 x 1024 speech ids.
  vocab = training_vocab(c)
  assert (vocab.speech_base, vocab.image_base) == (1006, 1006 + 4096)
  with caplog.at_level(logging.INFO, logger="mio_jax.train"):
    concrete = with_concrete_code_order(c)
  assert concrete.vocab.code_order == "speech_first" and c.vocab.code_order == "from_init"
  assert f"code_order=from_init: speech_first, from {c.init_from}/model_config.json" in caplog.text
  # The run's own model_config.json records the concrete order, for export, generation, next stage.
  with open(save_run_config(str(tmp_path / "run"), c)) as f:
    assert json.load(f)["vocab"]["code_order"] == "speech_first"


def test_code_order_from_init_follows_runs_dir_and_text_only_imports(tmp_path):
  from mio_jax.train.code_order import resolve_code_order

  c = stage_config(4, "smoke")
  _init_checkpoint(tmp_path / "stage3", dict(SMOKE_CODES, code_order="speech_first"))
  c.update(runs_dir=str(tmp_path), previous_run="stage3")
  assert resolve_code_order(c)[0] == "speech_first"
  # A text-only import (text_size only): its code rows start new, in the fresh run's order.
  c.update(runs_dir="", previous_run="", init_from=_init_checkpoint(tmp_path / "text", {"text_size": 1000}))
  assert resolve_code_order(c) == ("image_first", f"{c.init_from} records no code layout in a "
                                                  "model_config.json (a text-only start)")
  validate(c, cpu_devices(8))


@pytest.mark.parametrize("order,match", [
    ("image_first", r"^config.vocab.code_order='image_first', but config.init_from='.*' has 'speech_first' "
                    r"\(its model_config.json\): pass --config.vocab.code_order=speech_first \(or from_init"),
    ("video_first", r"^config.vocab.code_order='video_first' is not one of \('image_first', 'speech_first', "
                    r"'from_init'\)$"),
])
def test_code_order_that_cannot_work_names_the_key(tmp_path, order, match):
  c = stage_config(4, "smoke")
  c.init_from = _init_checkpoint(tmp_path / "import", dict(SMOKE_CODES, code_order="speech_first"))
  c.vocab.code_order = order
  with pytest.raises(ConfigError, match=match) as info:
    validate(c, cpu_devices(8))
  assert "\n" not in str(info.value)
