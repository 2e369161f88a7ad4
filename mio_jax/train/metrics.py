"""Throughput, MFU, where the time goes, and the writers: TensorBoard event files (tensorboardX) and metrics.jsonl."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time

import jax

from mio_jax import storage

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
  """Scalars to WORKDIR/metrics.jsonl and WORKDIR/tensorboard/ (process 0 only); WORKDIR may be gs://.

  write(step, scalars): each value is a number, or None for a metric absent at this step (e.g. a
  modality with no tokens in the batch): null in metrics.jsonl, nothing in TensorBoard. A
  non-finite number is a real value gone wrong and is written visibly, as "nan", "inf" or "-inf".

  resume_step=N (a run restarting from its step-N checkpoint): rows after N, written by the run
  that died after its last checkpoint, are removed from metrics.jsonl (rewritten atomically), and
  TensorBoard is told to discard its events after N (tensorboardX purge_step: a SessionLog START
  at N + 1), so the re-run steps appear once.

  Object stores cannot append, and tensorboardX's own GCS writer is broken (no `buffer`), so for a
  remote WORKDIR both files are written in a local staging folder, as for a local run, and each is
  uploaded whole every `sync_every_s` and on close (what TensorFlow's GCS file writer does on
  flush). Whole-object uploads are atomic, so a reader of the bucket sees a complete file; an event
  file past `rotate_bytes` is closed and a new one started, bounding each upload.
  """

  def __init__(self, workdir, *, enabled: bool = True, resume_step: int | None = None,
               sync_every_s: float = 60.0, rotate_bytes: int = 16 << 20):
    self.enabled = enabled
    self.workdir = storage.as_path(workdir)
    self.path = self.workdir / "metrics.jsonl"
    self.remote = storage.is_remote(self.workdir)
    self.sync_every_s, self.rotate_bytes = sync_every_s, rotate_bytes
    self._tb = None
    if not enabled:
      return
    storage.check_reachable(self.workdir, "workdir")
    self.workdir.mkdir(parents=True, exist_ok=True)
    self._stage = tempfile.mkdtemp(prefix="mio_metrics_") if self.remote else os.fspath(self.workdir)
    self._jsonl = os.path.join(self._stage, "metrics.jsonl")
    self._tb_dir = os.path.join(self._stage, "tensorboard")
    self._open_jsonl(resume_step)
    self._purge_step = None if resume_step is None else resume_step + 1
    self._uploaded: set[str] = set()
    self._last_sync = time.monotonic()

  def _open_jsonl(self, resume_step: int | None) -> None:
    text = self.path.read_text() if self.path.exists() else ""
    if resume_step is not None and text:
      rows = [line for line in text.splitlines() if _row_step(line) is not None]
      kept = "".join(line + "\n" for line in rows if _row_step(line) <= resume_step)
      if kept != text:
        storage.atomic_write_text(self.path, kept)
      text = kept
    if self.remote:
      with open(self._jsonl, "w", encoding="utf-8") as f:
        f.write(text)

  def _events(self):
    """The open event file, started on first use (with the purge marker after a resume)."""
    if self._tb is None:
      from tensorboardX.event_file_writer import EventsWriter  # no TensorFlow needed (README: why)
      from tensorboardX.proto.event_pb2 import Event, SessionLog

      os.makedirs(self._tb_dir, exist_ok=True)
      # tensorboardX's synchronous writer (SummaryWriter queues events in a thread, so a sync could
      # miss the last ones). A unique, time-ordered name: TensorBoard reads a run's files in name
      # order, and two writers opened in one second must not share (and truncate) one file.
      self._tb = EventsWriter(os.path.join(self._tb_dir, "events"), f".{time.time_ns()}")
      if self._purge_step is not None:  # TensorBoard drops earlier events at steps >= this one
        self._tb.write_event(Event(wall_time=time.time(), step=self._purge_step,
                                   session_log=SessionLog(status=SessionLog.START)))
        self._purge_step = None
    return self._tb

  def write(self, step: int, scalars: dict[str, float | None]) -> None:
    if not self.enabled:
      return
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.proto.summary_pb2 import Summary

    row, values = {"step": int(step)}, []
    for k, v in scalars.items():
      if v is None:
        row[k] = None
        continue
      v = v if isinstance(v, int) and not isinstance(v, bool) else float(v)
      row[k] = v if math.isfinite(v) else str(v)  # "nan", "inf", "-inf"
      values.append(Summary.Value(tag=k, simple_value=v))
    events = self._events()
    events.write_event(Event(wall_time=time.time(), step=int(step), summary=Summary(value=values)))
    with open(self._jsonl, "a", encoding="utf-8") as f:
      f.write(json.dumps(row) + "\n")
    if self.remote and time.monotonic() - self._last_sync >= self.sync_every_s:
      self.sync()
    else:
      events.flush()

  def write_summaries(self, step: int, summaries: list) -> None:
    """TensorBoard-only summaries (tensorboardX Summary protos: text, images, audio) at `step`."""
    if not self.enabled or not summaries:
      return
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.proto.summary_pb2 import Summary

    values = [v for s in summaries for v in s.value]
    events = self._events()
    events.write_event(Event(wall_time=time.time(), step=int(step), summary=Summary(value=values)))
    events.flush()

  def sync(self) -> None:
    """Uploads the staged files (remote WORKDIR only); rotates an event file past rotate_bytes."""
    if not (self.enabled and self.remote):
      return
    names = sorted(os.listdir(self._tb_dir)) if os.path.isdir(self._tb_dir) else []
    rotate = False
    if self._tb is not None:
      self._tb.flush()
      rotate = any(os.path.getsize(os.path.join(self._tb_dir, n)) > self.rotate_bytes
                   for n in names if n not in self._uploaded)
      if rotate:  # this upload is the file's last; the next write opens a new one
        self._tb.close()
        self._tb = None
    storage.upload(self._jsonl, self.path)
    for name in (n for n in names if n not in self._uploaded):
      storage.upload(os.path.join(self._tb_dir, name), self.workdir / "tensorboard" / name)
    if rotate:
      self._uploaded.update(names)
    self._last_sync = time.monotonic()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      self._tb = None
    self.sync()
    if self.enabled and self.remote:
      shutil.rmtree(self._stage, ignore_errors=True)
      self.enabled = False


def _row_step(line: str) -> int | None:
  """The step of a metrics.jsonl line; None for a torn or foreign line (dropped on rewrite)."""
  try:
    step = json.loads(line).get("step")
  except (json.JSONDecodeError, AttributeError):
    return None
  return step if isinstance(step, int) else None


class Throughput:
  """Tokens/s and MFU over the steps since the last call."""

  def __init__(self, tokens_per_step: int, flops_per_token: float, peak_tflops_total: float | None):
    self.tokens_per_step = tokens_per_step
    self.flops_per_token = flops_per_token
    self.peak = peak_tflops_total
    self._t, self._steps = time.perf_counter(), 0

  def step(self) -> None:
    self._steps += 1

  def read(self, excluded_s: float = 0.0) -> tuple[float, float | None]:
    """Over the time since the last read less `excluded_s` (evaluations, checkpoint saves)."""
    now = time.perf_counter()
    elapsed = max(now - self._t - excluded_s, 1e-9)
    tokens_per_s = self._steps * self.tokens_per_step / elapsed
    mfu = tokens_per_s * self.flops_per_token / (self.peak * 1e12) if self.peak else None
    self._t, self._steps = now, 0
    return tokens_per_s, mfu


def num_devices_peak(override: float) -> float | None:
  per = peak_tflops(jax.devices()[0], override)
  return per * jax.device_count() if per else None


class StepTimes:
  """Where a run's wall time goes, per logging window (docs/metrics.md).

  The loop reports each wait as it happens (`add("data_wait" | "eval" | "checkpoint", seconds)`,
  `step()` per step); `read()` at the end of a window, once the window's steps have finished on
  the device, returns per step: `step_seconds` (the window's wall time less evaluations and
  checkpoint saves) and `data_wait_seconds` (host time in the input pipeline), and `goodput`: the
  run's productive step time so far (step time less data waits) over its wall time since `start`
  (startup, restore and compilation included).
  """

  WAITS = ("data_wait", "eval", "checkpoint")

  def __init__(self, start: float):
    self.start, self.productive = start, 0.0
    self._begin()

  def _begin(self) -> None:
    self._t, self._steps = time.perf_counter(), 0
    self.waits = dict.fromkeys(self.WAITS, 0.0)

  def restart_window(self) -> None:
    """The first window starts at the first step, not at the start of the run."""
    self._begin()

  def add(self, kind: str, seconds: float) -> None:
    self.waits[kind] += seconds

  def step(self) -> None:
    self._steps += 1

  def excluded(self) -> float:
    return self.waits["eval"] + self.waits["checkpoint"]

  def read(self) -> dict[str, float]:
    now = time.perf_counter()
    steps = max(self._steps, 1)
    stepping = max(now - self._t - self.excluded(), 0.0)
    self.productive += max(stepping - self.waits["data_wait"], 0.0)
    out = {"step_seconds": stepping / steps, "data_wait_seconds": self.waits["data_wait"] / steps,
           "goodput": self.productive / max(now - self.start, 1e-9)}
    self._begin()
    return out
