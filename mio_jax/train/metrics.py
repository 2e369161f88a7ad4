"""Throughput, MFU, and the writers: TensorBoard event files (tensorboardX) and metrics.jsonl."""

from __future__ import annotations

import json
import math
import os
import time

import jax

# Dense bf16 peak TFLOP/s per device, by the start of `device.device_kind`.
PEAK_TFLOPS = {
    "TPU v4": 275.0,
    "TPU v5 lite": 197.0,
    "TPU v5e": 197.0,
    "TPU v5p": 459.0,
    "TPU v5": 459.0,
    "TPU v6 lite": 918.0,
    "TPU v6e": 918.0,
    "NVIDIA H100": 989.0,
    "NVIDIA H200": 989.0,
    "NVIDIA A100": 312.0,
}


def peak_tflops(device, override: float = 0.0) -> float | None:
  if override:
    return override
  kind = getattr(device, "device_kind", "")
  for prefix in sorted(PEAK_TFLOPS, key=len, reverse=True):
    if kind.startswith(prefix):
      return PEAK_TFLOPS[prefix]
  return None


def train_flops_per_token(model_cfg, seq_len: int) -> float:
  """6 x matmul parameters (forward + backward) plus causal attention's score and value matmuls."""
  matmul_params = model_cfg.num_params(include_embedding=False) + model_cfg.embed_dim * model_cfg.vocab_size
  attention = 6 * model_cfg.num_layers * model_cfg.num_heads * model_cfg.head_dim * seq_len  # causal: half of 12
  return 6.0 * matmul_params + attention


class MetricWriter:
  """Writes scalars to TensorBoard and to WORKDIR/metrics.jsonl (process 0 only).

  A value of None (a modality absent from the batch) is written as null; a non-finite float as the
  string "nan", "inf" or "-inf". `resume_step`: rows and events after it (written before a crash
  or preemption, and about to be replayed) are dropped, so each step has one row.
  """

  def __init__(self, workdir: str, *, enabled: bool = True, resume_step: int | None = None):
    self.enabled = enabled
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    if enabled:
      os.makedirs(workdir, exist_ok=True)
      if resume_step is not None and os.path.exists(self.path):
        with open(self.path) as f:
          kept = [line for line in f if line.strip() and json.loads(line)["step"] <= resume_step]
        with open(self.path + ".tmp", "w") as f:
          f.writelines(kept)
        os.replace(self.path + ".tmp", self.path)
      from tensorboardX import SummaryWriter  # no TensorFlow needed (README: why)
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"),
                               purge_step=None if resume_step is None else resume_step + 1)

  def write(self, step: int, scalars: dict[str, float | None]) -> None:
    if not self.enabled:
      return
    row = {"step": step}
    for k, v in scalars.items():
      if v is not None:
        self._tb.add_scalar(k, v, step)
        v = v if math.isfinite(v) else str(v)  # "nan", "inf", "-inf": JSON has no such numbers
      row[k] = v
    with open(self.path, "a") as f:
      f.write(json.dumps(row) + "\n")

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


class Throughput:
  """Tokens/s and MFU over the steps since the last call."""

  def __init__(self, tokens_per_step: int, flops_per_token: float, peak_tflops_total: float | None):
    self.tokens_per_step = tokens_per_step
    self.flops_per_token = flops_per_token
    self.peak = peak_tflops_total
    self._t, self._steps = time.perf_counter(), 0

  def step(self) -> None:
    self._steps += 1

  def read(self) -> tuple[float, float | None]:
    now = time.perf_counter()
    elapsed = max(now - self._t, 1e-9)
    tokens_per_s = self._steps * self.tokens_per_step / elapsed
    mfu = tokens_per_s * self.flops_per_token / (self.peak * 1e12) if self.peak else None
    self._t, self._steps = now, 0
    return tokens_per_s, mfu


def num_devices_peak(override: float) -> float | None:
  per = peak_tflops(jax.devices()[0], override)
  return per * jax.device_count() if per else None
