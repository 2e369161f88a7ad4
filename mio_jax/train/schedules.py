"""Learning-rate schedules (config.optimizer.schedule) and the one a run keeps across resumes.

    warmup_cosine        linear warmup to peak_lr, cosine to final_lr_fraction * peak_lr (MIO; default)
    warmup_stable_decay  linear warmup, peak_lr until the last decay_fraction of the steps, then linear
                         decay to the floor (WSD)
    constant             linear warmup, then peak_lr
    linear               linear warmup, then linear decay to the floor at the last step

Warmup lasts max(1, round(warmup_fraction * total_steps)) steps from 0 (the first step's rate is 0).

A run's schedule is fixed when it starts: WORKDIR/schedule.json records it (total steps included).
A resume whose config would give another schedule (e.g. a larger train.steps) says so in one line
and keeps the saved one, so the learning rate never jumps mid-run; to train on a new schedule, start
a new workdir with init_from (docs/metrics.md, "Schedules").
"""

from __future__ import annotations

import dataclasses
import json
import logging

import optax

from mio_jax import storage

SCHEDULES = ("warmup_cosine", "warmup_stable_decay", "constant", "linear")
SCHEDULE_FILE = "schedule.json"
log = logging.getLogger("mio_jax.train")


@dataclasses.dataclass(frozen=True)
class ScheduleSpec:
  """Everything a learning-rate schedule depends on."""
  name: str
  total_steps: int
  peak_lr: float
  warmup_fraction: float
  final_lr_fraction: float
  decay_fraction: float  # warmup_stable_decay only: the share of the steps spent decaying

  @property
  def warmup_steps(self) -> int:
    return max(1, int(round(self.warmup_fraction * self.total_steps)))

  def describe(self) -> str:
    return (f"{self.name} over {self.total_steps} steps, peak {self.peak_lr:g}, warmup "
            f"{self.warmup_fraction:g}, floor {self.final_lr_fraction:g}"
            + (f", decay {self.decay_fraction:g}" if self.name == "warmup_stable_decay" else ""))


def schedule_spec(opt_cfg, total_steps: int) -> ScheduleSpec:
  if opt_cfg.schedule not in SCHEDULES:
    raise ValueError(f"config.optimizer.schedule={opt_cfg.schedule!r} is not one of {', '.join(SCHEDULES)}")
  return ScheduleSpec(opt_cfg.schedule, int(total_steps), float(opt_cfg.peak_lr),
                      float(opt_cfg.warmup_fraction), float(opt_cfg.final_lr_fraction),
                      float(opt_cfg.decay_fraction))


def build_schedule(spec: ScheduleSpec) -> optax.Schedule:
  peak, floor, total = spec.peak_lr, spec.peak_lr * spec.final_lr_fraction, spec.total_steps
  warmup = spec.warmup_steps
  if spec.name == "warmup_cosine":
    return optax.warmup_cosine_decay_schedule(init_value=0.0, peak_value=peak, warmup_steps=warmup,
                                              decay_steps=max(total, warmup + 1), end_value=floor)
  ramp = optax.linear_schedule(0.0, peak, warmup)
  if spec.name == "constant":
    return optax.join_schedules([ramp, optax.constant_schedule(peak)], [warmup])
  if spec.name == "linear":
    return optax.join_schedules([ramp, optax.linear_schedule(peak, floor, max(total - warmup, 1))],
                                [warmup])
  decay = max(1, int(round(spec.decay_fraction * total)))  # warmup_stable_decay
  stable_end = max(warmup, total - decay)
  return optax.join_schedules(
      [ramp, optax.constant_schedule(peak), optax.linear_schedule(peak, floor, decay)],
      [warmup, stable_end])


def run_schedule(workdir: str, spec: ScheduleSpec, *, resuming: bool, write: bool) -> ScheduleSpec:
  """The schedule this run follows: on a resume, the one saved in WORKDIR/schedule.json (one log
  line if the config asks for another); else `spec`, saved there when `write` (process 0)."""
  path = storage.as_path(workdir) / SCHEDULE_FILE
  if resuming and path.exists():
    saved = ScheduleSpec(**json.loads(path.read_text()))
    if saved != spec:
      log.warning("config asks for learning-rate schedule %s, but this run started with %s; keeping "
                  "the run's schedule (start a new workdir with init_from for a new one)",
                  spec.describe(), saved.describe())
    return saved
  if write:
    storage.atomic_write_text(path, json.dumps(dataclasses.asdict(spec), indent=1, sort_keys=True))
  return spec
