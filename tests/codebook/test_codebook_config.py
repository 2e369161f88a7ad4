"""The codebook config is checked as strictly as training's: one line naming the key."""

import os
import subprocess
import sys

import pytest

import configs.codebook as codebook_config
from codebook_helpers import blobs, tiny_config, write_files
from mio_jax.codebook.fit import fit
from mio_jax.config.codebook_job import ConfigError, check_codebook_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def error_of(config) -> str:
  with pytest.raises(ConfigError) as e:
    check_codebook_config(config)
  assert "\n" not in str(e.value)
  return str(e.value)


@pytest.mark.parametrize("preset", ["tiny", "unicode2"])
def test_presets_pass(preset):
  c = codebook_config.get_config(preset)
  c.data.embeddings = "/data/siglip"
  check_codebook_config(c)


@pytest.mark.parametrize("section", ["", "data", "utilisation", "mesh", "mesh.ici"])
def test_unknown_and_missing_keys_are_named(section):
  c = tiny_config("/x")
  target = c
  for part in filter(None, section.split(".")):
    target = target[part]
  where = ".".join(["config"] + [p for p in section.split(".") if p])
  target["colour"] = 1
  assert error_of(c).startswith(f"{where}.colour is not a known key (")
  del target["colour"]
  first = sorted(target.keys())[0]
  del target[first]
  assert error_of(c) == f"{where}.{first} is missing"


def test_a_typo_names_the_key_meant():
  c = tiny_config("/x")
  c.reseed_pol = 3
  assert error_of(c) == "config.reseed_pol is not a known key (did you mean config.reseed_pool?)"


@pytest.mark.parametrize("key,value,message", [
    ("algorithm", "kmeans", "config.algorithm='kmeans' is not one of lloyd, minibatch"),
    ("utilisation.method", "entropy", "config.utilisation.method='entropy' is not one of none, usage_ema"),
    ("init_points", 10, "config.init_points=10 must be at least config.num_clusters=64"),
    ("block_size", 0, "config.block_size=0 must be at least 1"),
    ("utilisation.usage_decay", 1.0, "config.utilisation.usage_decay=1.0 must be in [0, 1)"),
    ("data.embeddings", "", "config.data.embeddings is empty: name a folder of .npy embedding files"),
])
def test_bad_values_are_named(key, value, message):
  assert error_of(tiny_config("/x", **{key: value})) == message


def test_more_clusters_than_points_is_named(tmp_path):
  write_files(str(tmp_path / "d"), blobs(50, 4, 2), 1)
  with pytest.raises(ConfigError, match=r"^config\.num_clusters=64 is more than the 50 points$"):
    fit(tiny_config(str(tmp_path / "d")), str(tmp_path / "run"))


def test_cli_reports_a_bad_value_in_one_line(tmp_path):
  r = subprocess.run([sys.executable, "launch/fit_codebook.py", "--config=configs/codebook.py:tiny",
                      f"--workdir={tmp_path}", "--config.data.embeddings=/x", "--config.algorithm=kmeans"],
                     cwd=ROOT, capture_output=True, text=True, timeout=120,
                     env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert r.returncode == 1
  want = "config error: config.algorithm='kmeans' is not one of lloyd, minibatch"
  assert r.stderr.strip().splitlines()[-1] == want
