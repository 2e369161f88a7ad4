"""The fit end to end on embedding files: 8 devices give the bits of 1, a resumed run the bits of an
uninterrupted one (also when the checkpoint was written on another device count), a checkpoint of
other data is refused, and the exported codebook is the fit's centroids."""

import json
import os

import jax
import numpy as np
import pytest

from codebook_helpers import blobs, tiny_config, write_files
from mio_jax.codebook.fit import fit
from mio_jax.train.checkpoint import CheckpointError

# 45 clusters (not a multiple of 8 devices nor of the 16-row blocks); 3000 points in 5 files, read
# by 2 streams of 128 rows a step (files 0, 2, 4: 1800 points; 1, 3: 1200): 15 steps per pass, the
# second stream padding from its 10th.
OVERRIDES = dict(num_clusters=45, passes=3, global_batch=256, init_points=512, block_size=16,
                 **{"utilisation.method": "usage_ema", "data.streams": 2})


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  folder = str(tmp_path_factory.mktemp("blobs"))
  write_files(folder, blobs(3000, 24, 40, seed=2), 5)
  return folder


def run(data, workdir, algorithm, devices=8, **kw):
  config = tiny_config(data, algorithm=algorithm, **OVERRIDES)
  return fit(config, str(workdir), devices=jax.devices()[:devices], **kw)


def metric_rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  return [{k: v for k, v in r.items() if k != "points_per_s"} for r in rows]


@pytest.mark.parametrize("algorithm", ["lloyd", "minibatch"])
def test_eight_devices_give_the_bits_of_one(data, tmp_path, algorithm):
  assert jax.device_count() == 8  # tests/conftest.py forces 8 CPU devices before jax starts
  one = run(data, tmp_path / "one", algorithm, devices=1)
  eight = run(data, tmp_path / "eight", algorithm, devices=8)
  assert one.step == eight.step == 45
  np.testing.assert_array_equal(one.centroids, eight.centroids)
  assert one.last_pass["pass_inertia"] == eight.last_pass["pass_inertia"]
  assert one.last_pass["used_share"] == eight.last_pass["used_share"]


@pytest.mark.parametrize("algorithm,stop", [("lloyd", 17), ("minibatch", 15)])
def test_resume_is_bitwise(data, tmp_path, algorithm, stop):
  # Lloyd stops mid-pass (its sums and farthest-point pool are in the checkpoint); mini-batch at a
  # pass boundary.
  whole = run(data, tmp_path / "whole", algorithm)
  part = run(data, tmp_path / "split", algorithm, stop_after=stop)
  assert part.step == stop and not os.path.exists(tmp_path / "split" / "codebook.npy")
  rest = run(data, tmp_path / "split", algorithm)
  assert rest.resumed_from == stop and rest.step == whole.step
  np.testing.assert_array_equal(rest.centroids, whole.centroids)
  assert metric_rows(tmp_path / "split") == metric_rows(tmp_path / "whole")
  saved = np.load(tmp_path / "split" / "codebook.npy")
  np.testing.assert_array_equal(saved, whole.centroids)
  assert saved.shape == (45, 24)
  assert json.loads((tmp_path / "split" / "codebook.json").read_text())["step"] == 45


def test_a_checkpoint_of_eight_devices_resumes_on_one(data, tmp_path):
  whole = run(data, tmp_path / "whole", "lloyd", devices=8)
  run(data, tmp_path / "split", "lloyd", devices=8, stop_after=17)  # padded to 64 rows
  rest = run(data, tmp_path / "split", "lloyd", devices=1)  # padded to 48 rows
  np.testing.assert_array_equal(rest.centroids, whole.centroids)


def test_a_checkpoint_of_other_data_is_refused_in_one_line(data, tmp_path):
  run(data, tmp_path / "run", "minibatch", stop_after=4)
  other = str(tmp_path / "other")
  write_files(other, blobs(3000, 24, 40, seed=3)[:2999], 5)  # one point fewer
  config = tiny_config(other, algorithm="minibatch", **OVERRIDES)
  with pytest.raises(CheckpointError) as e:
    fit(config, str(tmp_path / "run"))
  assert "\n" not in str(e.value) and "saved fingerprint=" in str(e.value)
