"""Tokens/s and MFU from a known clock, computed by hand."""

import pytest

from mio_jax.train import metrics


def test_tokens_per_second_and_mfu_over_the_steps_since_the_last_read(monkeypatch):
  clock = iter([100.0, 104.0, 105.0])
  monkeypatch.setattr(metrics.time, "perf_counter", lambda: next(clock))
  t = metrics.Throughput(tokens_per_step=1000, flops_per_token=2e9, peak_tflops_total=100.0)
  t.step()
  t.step()
  # 2 steps x 1000 tokens in 4 s = 500 tokens/s; 500 x 2e9 FLOP/token = 1e12 FLOP/s of 100e12: 1 %.
  assert t.read() == (pytest.approx(500.0), pytest.approx(0.01))
  t.step()  # then 1 step in 1 s
  assert t.read() == (pytest.approx(1000.0), pytest.approx(0.02))


def test_no_known_peak_gives_no_mfu(monkeypatch):
  clock = iter([0.0, 2.0])
  monkeypatch.setattr(metrics.time, "perf_counter", lambda: next(clock))
  t = metrics.Throughput(tokens_per_step=10, flops_per_token=1.0, peak_tflops_total=None)
  t.step()
  assert t.read() == (pytest.approx(5.0), None)
