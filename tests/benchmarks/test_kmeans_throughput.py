"""benchmarks/kmeans_throughput.py: the projection's arithmetic by hand, and a smoke run."""

import pytest

from benchmarks import kmeans_throughput as bench


def test_projection_arithmetic():
  # 2 x 500,000 x 1152 = 1.152e9 flops per point: at 1.152 GFLOP/s, one point per second per device
  lines = bench.projection_lines(1.152e9, devices_at_scale=10, points=(3600,), tpu_peak_tflops=1.152e-3 * 6,
                                 utilisation=1.0)
  assert lines[0].endswith("this machine: 1.0 points/s per device")
  assert lines[1] == "  one pass over 3,600 points: 1.0 device-hours (0.10 h on 10 such devices)"
  # 6.912 GFLOP/s peak / 6 passes = 1.152 GFLOP/s: 1 point/s; 3600 points on 10 chips: 6 min
  assert lines[2].endswith(": 1 points/s per chip; 3,600 points: 6.0 min per pass on 10 chips")


@pytest.mark.slow  # times three sides at two K under the protocol (~5 s); the arithmetic stays
def test_smoke_run_prints_the_protocol_and_a_projection(capsys):
  result = bench.main(["--smoke", "--devices=1", "--rounds=1"])
  out = capsys.readouterr().out
  assert set(result["stats"]) == {512, 1024} and result["flops_per_s"] > 0
  for line in ("== codebook k-means", "load before:", "blocked vs full ids agree on 100.00%",
               "xfull K=1024", "K=500,000 d=1152: 1.152 GFLOP per point", "load after:"):
    assert line in out, line
