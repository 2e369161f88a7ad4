"""launch/train_compile.py: the train step compiled for a TPU topology from this CPU host.

The compile tests need libtpu (skipped without it, like tests/kernels/test_flash_tpu_aot.py). The
1B preset takes about 2 minutes to compile here, so they compile it at half width, one layer and
512 tokens (about 30 s): the same step, kernels, sharding and vocabulary.
"""

import importlib.util
import json
import math
import re
import os
import subprocess
import sys

import pytest

from configs.base import stage_config
from mio_jax.parallel.tpu_topologies import CHIPS, TopologyNameError, parse_slice

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
needs_libtpu = pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                                  reason="libtpu is not installed")
SMALL = ["--config=configs/stage2.py:1b", "--config.model.num_layers=1", "--config.data.seq_len=512",
         "--config.model.embed_dim=1024", "--config.model.mlp_dim=2816", "--config.model.num_heads=8"]


@pytest.mark.parametrize("name,chips,jax_name", [
    ("v5p-128", 64, "v5p:4x4x4"), ("v5p-8", 4, "v5p:2x2x1"), ("v5e-256", 256, "v5e:16x16"),
    ("v6e-8", 8, "v6e:2x4"), ("v4-32", 16, "v4:2x2x4")])
def test_cloud_names_map_to_libtpu_topologies(name, chips, jax_name):
  s = parse_slice(name)
  assert (s.chips, s.jax_name) == (chips, jax_name)


@pytest.mark.parametrize("name,words", [("v5p-100", "not a v5p slice size"), ("v7-8", "GENERATION-N"),
                                        ("v5p", "GENERATION-N"), ("v5e-3", "v5e-4")])
def test_bad_topology_names_are_one_line(name, words):
  with pytest.raises(TopologyNameError, match=words) as e:
    parse_slice(name)
  assert "\n" not in str(e.value)


def _run(*args, timeout=600):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "launch/train_compile.py", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow  # a 1B compile for v5p-8; the fails-before-compiling checks stay
@needs_libtpu
def test_report_for_a_v5p_slice(tmp_path):
  report_path = tmp_path / "report.json"
  proc = _run(*SMALL, "--topology=v5p-8", f"--report={report_path}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  r = json.loads(report_path.read_text())
  assert (r["topology"], r["jax_topology"], r["chips"]) == ("v5p-8", "v5p:2x2x1", 4)
  assert r["mesh"] == {"data": 1, "fsdp": 4, "tensor": 1}
  assert r["attention_impl"] == "splash"  # "auto" on a TPU target
  assert r["hbm_bytes_per_chip"] == 95 * 2**30
  for key in ("argument_bytes_per_chip", "output_bytes_per_chip", "temp_bytes_per_chip",
              "peak_bytes_per_chip"):
    assert r[key] > 0, key
  assert r["peak_bytes_per_chip"] == (r["argument_bytes_per_chip"] + r["output_bytes_per_chip"]
                                      + r["temp_bytes_per_chip"] - r["alias_bytes_per_chip"])
  assert 0 < r["xla_peak_bytes_per_chip"] <= r["peak_bytes_per_chip"]  # not all temporaries live at once
  assert r["headroom_bytes_per_chip"] == r["hbm_bytes_per_chip"] - r["peak_bytes_per_chip"]
  # The fp32 params and two Adam moments, split 4 ways, are in the arguments (plus the batch).
  assert 12 * r["params"] / 4 <= r["argument_bytes_per_chip"] <= 12 * r["params"] / 4 * 1.05
  # Analytic FLOPs by hand: 6 x (non-embedding params + LM head) + 6 L H D T per token.
  v = stage_config(2, "1b").model.vocab_size  # the table's rows, padding included: all computed
  e, layers, heads, kv, d, m, t, b = 1024, 1, 8, 4, 128, 2816, 512, 8
  matmul = layers * (e * d * (2 * heads + 2 * kv) + 3 * e * m + 2 * e) + e + e * v
  assert math.isclose(r["model_flops_per_step"], b * t * (6 * matmul + 6 * layers * heads * d * t))
  compute_s = r["model_flops_per_step"] / (4 * CHIPS["v5p"].peak_bf16_tflops * 1e12)
  assert math.isclose(r["compute_bound_s"], compute_s)
  assert r["step_time_lower_bound_s"] == max(r["compute_bound_s"], r["memory_bound_s"]) > 0
  assert "per chip: peak" in proc.stdout and "roofline lower bound" in proc.stdout


@needs_libtpu
@pytest.mark.slow  # two compiles of about 30 s
def test_chunked_loss_lowers_the_temporaries(tmp_path):
  reports = {}
  for chunk in (0, 128):  # 8 rows of 512 tokens per chip: the logits dominate, as at MIO's batch
    path = tmp_path / f"report{chunk}.json"
    proc = _run(*SMALL, "--topology=v5p-8", "--config.data.global_batch=32",
                f"--config.model.loss_chunk={chunk}", f"--report={path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports[chunk] = json.loads(path.read_text())
  assert reports[128]["loss_chunk"] == 128 and "loss chunks of 128" in proc.stdout
  # Per chip the float32 logits are 8 x 512 x 76,800 x 4 bytes = 1.2 GiB; chunks of 128 hold a quarter
  # (the scan also holds the LM head and its gradient whole, so small batches gain less or nothing).
  saved = reports[0]["temp_bytes_per_chip"] - reports[128]["temp_bytes_per_chip"]
  assert saved > 8 * 512 * 76800 * 4 // 4, saved


@pytest.mark.slow  # a compile; the fails-before-compiling check stays
@needs_libtpu
def test_out_of_memory_is_one_line_and_fails():
  proc = _run(*SMALL, "--topology=v5e-4", "--config.data.global_batch=1024", "--config.model.remat_policy=none")
  assert proc.returncode != 0
  last = proc.stderr.strip().splitlines()[-1]
  # e.g. "v5e-4: out of memory: the train step needs 69.24G for HLO temporaries of 15.75G HBM per chip"
  assert re.fullmatch(r"v5e-4: out of memory: the train step needs [\d.]+G? .*of [\d.]+G? ?(GiB )?HBM per chip.*",
                      last), last


@needs_libtpu
def test_config_that_does_not_fit_the_topology_fails_before_compiling():
  proc = _run(*SMALL, "--topology=v5p-8", "--config.mesh.ici.tensor=3", timeout=120)
  assert proc.returncode != 0
  assert proc.stderr.strip().splitlines()[-1].startswith("config error: config.mesh.ici")
