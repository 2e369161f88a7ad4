"""A visual-codebook config (config.model.image_*) that cannot work fails before compiling, in one line
naming the key and the file; one that can trains, checkpoints and resumes with the codebook intact."""

import json
import os
import shutil

import numpy as np
import pytest
from fake_devices import cpu_devices
from safetensors.numpy import save_file

from configs.base import stage_config
from mio_jax.train.validate import ConfigError, validate

K, D = 24, 16  # D divisible by the smoke mesh's 8-way fsdp axis


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  root = tmp_path_factory.mktemp("codebooks")
  c = np.random.default_rng(0).standard_normal((K, D)).astype(np.float32)
  paths = {}
  for name, array in (("good", c), ("short", c[:K - 1]), ("float64", c.astype(np.float64)),
                      ("rank3", c.reshape(K, 2, D // 2)), ("narrow", c[:, :8])):
    paths[name] = str(root / f"{name}.npy")
    np.save(paths[name], array)
  paths["safetensors"] = str(root / "centroids.safetensors")
  save_file({"centroids": c, "other": c[:2]}, paths["safetensors"])
  paths["text"] = str(root / "centroids.txt")
  np.savetxt(paths["text"], c)
  return paths


def cascade_smoke(path: str, **model):
  c = stage_config(1, "smoke")
  c.vocab.image_codes = K
  c.model.update(vocab_size=1000 + 6 + K + 4096, image_embedding="cascade", image_codebook=path,
                 image_code_dim=D, image_projector_dim=32, image_head="tied")
  c.model.update(model)
  return c


KEY = r"^config.model.image_codebook="


@pytest.mark.parametrize("name,model,match", [
    ("good", dict(image_embedding="cascad"),
     r"^config.model.image_embedding='cascad' is not one of table, frozen, cascade$"),
    ("good", dict(image_head="shared"), r"^config.model.image_head='shared' is not one of separate, tied$"),
    ("good", dict(image_projector_dim=-1), r"^config.model.image_projector_dim=-1 must be 0"),
    (None, dict(image_codebook=""), r"^config.model.image_codebook is empty: image_embedding='cascade'"),
    (None, dict(image_codebook="/nonexistent/centroids.npy"), KEY + r"'/nonexistent/\S+' does not exist$"),
    ("short", {}, KEY + r"'.*short.npy' holds 23 centroids but config.vocab.image_codes=24$"),
    ("float64", {}, KEY + r"'.*float64.npy' holds float64 centroids, not float32$"),
    ("rank3", {}, KEY + r"'.*rank3.npy' holds an array of rank 3 \(24, 2, 8\)"),
    ("narrow", dict(image_code_dim=16), r"^config.model.image_code_dim=16 but .*narrow.npy' holds 8-dim "),
    ("text", {}, KEY + r"'.*centroids.txt' is neither a .npy nor a .safetensors file$"),
    ("narrow", dict(image_code_dim=8), None),  # passes the file checks; 8 is divisible by fsdp 8
])
def test_bad_codebook_config_names_its_key_and_file(files, name, model, match):
  c = cascade_smoke(files[name] if name else "", **model)
  if match is None:
    validate(c, cpu_devices(8))
    return
  with pytest.raises(ConfigError, match=match) as info:
    validate(c, cpu_devices(8))
  assert "\n" not in str(info.value)


def test_codebook_width_must_split_over_fsdp(files):
  """Else the frozen codebook would sit whole on every chip (it is split on its width)."""
  c = cascade_smoke(files["good"])
  c.data.global_batch = 32
  with pytest.raises(ConfigError, match=r"^config.model.image_code_dim=16 is not divisible by the fsdp axis"):
    validate(c, cpu_devices(32))
  c.model.image_embedding = "table"  # the codebook is not read: its width does not matter
  validate(c, cpu_devices(32))


def test_good_codebook_configs_pass(files):
  from mio_jax.model.codebook_file import read_rows

  for path in (files["good"], files["safetensors"]):
    for embedding, head in (("frozen", "separate"), ("cascade", "tied")):
      validate(cascade_smoke(path, image_embedding=embedding, image_head=head), cpu_devices(8))
  c = stage_config(1, "smoke")
  c.model.update(image_head="tied")  # the table's own image rows tied: no codebook file needed
  validate(c, cpu_devices(8))
  np.testing.assert_array_equal(read_rows(files["safetensors"], 3, 7), np.load(files["good"])[3:7])


@pytest.mark.slow  # three short training runs (one interrupted and resumed)
def test_cascade_run_resumes_bit_identically_with_the_codebook_intact(files, tmp_path):
  from mio_jax.export.to_hf import read_param
  from mio_jax.model.codebook_file import read_header
  from mio_jax.train.checkpoint import resolve_params_dir, saved_param_shapes
  from mio_jax.train.loop import train

  def config(path=files["good"]):
    c = cascade_smoke(path)
    c.data.update(seq_len=32, global_batch=8)
    c.train.update(steps=4, log_every=1, checkpoint_every=2, async_checkpointing=False)
    c.eval.update(every=2, batches=1)
    c.mesh.ici.update(data=2, fsdp=2, tensor=2)
    return c

  full = train(config(), str(tmp_path / "full")).losses
  own = str(tmp_path / "centroids.npy")
  shutil.copy(files["good"], own)
  first = train(config(own), str(tmp_path / "resumed"), stop_at_step=2).losses
  # The checkpoint holds the codebook, so the resumed run reads no row of the file (2.3 GB at 500K
  # codes): with its rows cut off (the header, all that validation reads, intact) a read would fail.
  os.truncate(own, read_header(own)[2])
  second = train(config(own), str(tmp_path / "resumed")).losses
  assert {**first, **second} == full
  params_dir = resolve_params_dir(str(tmp_path / "resumed"))
  codebook = read_param(params_dir, "visual/frozen_codebook")
  np.testing.assert_array_equal(codebook[:K], np.load(files["good"]))  # stored once, never updated
  opt_dir = params_dir.rsplit("/", 1)[0] + "/opt_state"
  assert (1024, D) not in saved_param_shapes(opt_dir).values()  # no moments of it
  run = json.load(open(tmp_path / "resumed" / "model_config.json"))
  assert run["model"]["image_embedding"] == "cascade" and "image_base" not in run["model"]


@pytest.mark.slow  # two short training runs; the loading itself is tested in tests/model/test_visual_cascade.py
def test_a_cascade_stage_starts_from_a_table_stage(files, tmp_path):
  """The user's path: a run in MIO's layout (here a 4-step stage; an import is the same layout),
  then --config.init_from=it with image_embedding=cascade: the shared parameters come over, the
  run trains."""
  from mio_jax.export.to_hf import read_param
  from mio_jax.train.checkpoint import resolve_params_dir
  from mio_jax.train.loop import train

  def config(**model):
    c = cascade_smoke(files["good"], **model)
    c.data.update(seq_len=32, global_batch=8)
    c.train.update(steps=2, log_every=1, checkpoint_every=2, async_checkpointing=False)
    c.mesh.ici.update(data=2, fsdp=2, tensor=2)
    return c

  table_run, cascade_run = str(tmp_path / "table"), str(tmp_path / "cascade")
  table = config(image_embedding="table", image_head="separate")
  table.train.steps = 4  # several steps away from a fresh init, so one step of the next run is less
  train(table, table_run)
  c = config()
  c.init_from = table_run
  c.train.update(steps=1, checkpoint_every=1)
  losses = train(c, cascade_run).losses
  assert len(losses) == 1 and all(np.isfinite(v) for v in losses.values())
  start = read_param(resolve_params_dir(table_run), "blocks/mlp_norm/scale")
  after = read_param(resolve_params_dir(cascade_run), "blocks/mlp_norm/scale")
  # One step from the table run's values, not from a fresh init (all ones), which is further away.
  moved, from_init = np.abs(after - start).max(), np.abs(start - 1.0).max()
  assert moved < from_init / 2, (moved, from_init)
