"""2 real processes x 4 CPU devices (127.0.0.1, jax.distributed from JAX_* variables), each reading
its own stream's files, give the centroids of 1 process x 8 devices, bit for bit."""

import hashlib
import json
import os
import sys

import jax
import numpy as np
import pytest
from multiprocess_helpers import run_processes

from codebook_helpers import blobs, tiny_config, write_files
from mio_jax.codebook.fit import fit

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fit_worker.py")
OVERRIDES = {"num_clusters": 45, "passes": 2, "global_batch": 256, "init_points": 512, "block_size": 16,
             "checkpoint_every": 10, "data.streams": 2, "algorithm": "lloyd"}


@pytest.mark.slow  # two jax processes start and compile: ~20 s on 2 cores
def test_two_processes_give_the_centroids_of_one(tmp_path):
  data = str(tmp_path / "data")
  write_files(data, blobs(3000, 24, 40, seed=2), 5)
  one = fit(tiny_config(data, **OVERRIDES), str(tmp_path / "one"), devices=jax.devices()[:8])
  args = json.dumps(dict(embeddings=data, workdir=str(tmp_path / "two"), overrides=OVERRIDES))
  results = run_processes([sys.executable, WORKER, args], 2, 4, timeout=240)
  for i, r in enumerate(results):
    assert r.returncode == 0, f"process {i} failed:\n{r.stderr[-3000:]}"
  out = [json.loads(next(l for l in r.stdout.splitlines() if l.startswith("RESULT "))[7:]) for r in results]
  want = hashlib.sha256(one.centroids.tobytes()).hexdigest()
  got = [(o["process"], o["count"], o["step"], o["sha"]) for o in out]
  assert got == [(0, 2, 30, want), (1, 2, 30, want)]
  np.testing.assert_array_equal(np.load(tmp_path / "two" / "codebook.npy"), one.centroids)
