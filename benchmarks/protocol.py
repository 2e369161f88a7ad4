"""The measurement protocol every script under benchmarks/ follows and prints.

- A machine header: CPU model and vector extensions (from /proc/cpuinfo), cores, any ISA cap set
  through XLA_FLAGS / ATEN_CPU_CAPABILITY / ONEDNN_MAX_CPU_ISA, the jax/jaxlib/torch versions.
- The 1-minute load average before, during (after each round) and after the run.
- Sides timed in interleaved rounds (A, B, A, B, ...), so load that comes and goes hits all alike;
  per side the best and the median round, and against a baseline side the ratio of the bests and
  the ratio of the medians.
- CONTENDED when the load went above 1.25 x cores at any sample (2.5 on a 2-core box; a benchmark
  that keeps both cores busy reads about 2 by itself): such figures show direction, never goals.

    from benchmarks import protocol
    run = protocol.start("speech encode")           # prints the header and the load before
    times = run.interleaved({"torch": f, "flax": g}, rounds=5)
    run.compare(times, baseline="torch", work={"torch": 16.0, "flax": 16.0}, unit="s audio")
    run.finish()                                    # prints the load after and the verdict
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import statistics
import sys
import time
from typing import Callable

CONTENDED_LOAD_PER_CORE = 1.25
ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile")
ISA_CAP_VARS = ("XLA_FLAGS", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")


def parse_cpuinfo(text: str) -> tuple[str, frozenset[str]]:
  """/proc/cpuinfo text -> (model name of the first processor, its flags). x86 spelling; other
  architectures give 'unknown CPU' and whatever `flags`/`Features` line they have."""
  model, flags = "unknown CPU", None
  for line in text.splitlines():
    key, _, value = line.partition(":")
    key = key.strip()
    if key == "model name" and model == "unknown CPU":
      model = value.strip()
    elif key in ("flags", "Features") and flags is None:
      flags = frozenset(value.split())
  return model, flags or frozenset()


def isa_cap(env: dict) -> str:
  """The ISA caps set in `env` (XLA_FLAGS only when it holds --xla_cpu_max_isa), '' if none."""
  caps = []
  for var in ISA_CAP_VARS:
    value = env.get(var, "")
    if var == "XLA_FLAGS":
      value = " ".join(f for f in value.split() if f.startswith("--xla_cpu_max_isa"))
    if value:
      caps.append(f"{var}={value}")
  return " ".join(caps)


def machine_class(flags: frozenset[str], cores: int, cap: str) -> str:
  """e.g. '2-core AVX-512' or '2-core AVX2 (AVX-512 capped to AVX2)': the key docs/benchmarks.md
  groups figures by."""
  isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no-AVX2"
  low = cap.lower()
  if isa == "AVX-512" and "avx2" in low and "avx512" not in low:
    return f"{cores}-core AVX2 (AVX-512 capped to AVX2)"
  return f"{cores}-core {isa}"


def is_contended(loads: list[float], cores: int) -> bool:
  """True when any load-average sample exceeded CONTENDED_LOAD_PER_CORE x cores."""
  return max(loads, default=0.0) > CONTENDED_LOAD_PER_CORE * cores


@dataclasses.dataclass(frozen=True)
class Stats:
  """Seconds per round of one side."""
  best: float
  median: float
  rounds: int

  @classmethod
  def of(cls, seconds: list[float]) -> "Stats":
    if not seconds:
      raise ValueError("Stats.of: no rounds timed")
    return cls(min(seconds), statistics.median(seconds), len(seconds))


def ratios(side: Stats, baseline: Stats) -> tuple[float, float]:
  """(ratio of bests, ratio of medians) as speed-ups of `side` over `baseline` (> 1: faster)."""
  return baseline.best / side.best, baseline.median / side.median


def _versions() -> str:
  out = []
  for dist in ("jax", "jaxlib", "torch"):
    try:
      out.append(f"{dist} {importlib.metadata.version(dist)}")
    except importlib.metadata.PackageNotFoundError:
      pass
  if "torch" in sys.modules:
    out.append(f"torch threads {sys.modules['torch'].get_num_threads()}")
  return ", ".join(out)


def _block(value):
  """Waits for jax's asynchronous results so a round's time covers the work."""
  if "jax" in sys.modules:
    sys.modules["jax"].block_until_ready(value)
  return value


class Run:
  """One benchmark run: header and load samples, interleaved timing, the contended verdict."""

  def __init__(self, title: str, cpuinfo: str | None = None):
    if cpuinfo is None:
      try:
        with open("/proc/cpuinfo") as f:
          cpuinfo = f.read()
      except OSError:
        cpuinfo = ""
    self.model, self.flags = parse_cpuinfo(cpuinfo)
    self.cores = os.cpu_count() or 1
    self.cap = isa_cap(dict(os.environ))
    self.machine = machine_class(self.flags, self.cores, self.cap)
    self.loads = [os.getloadavg()[0]]
    has = " ".join(f"{f}={'yes' if f in self.flags else 'no'}" for f in ISA_FLAGS)
    print(f"== {title}")
    print(f"machine: {self.model}, {self.cores} cores, {has}; class {self.machine}")
    print(f"isa cap: {self.cap or 'none'}; {_versions()}")
    print(f"load before: {self.loads[0]:.2f} (contended above "
          f"{CONTENDED_LOAD_PER_CORE * self.cores:.2f})", flush=True)

  def sample_load(self) -> float:
    self.loads.append(os.getloadavg()[0])
    return self.loads[-1]

  def interleaved(self, sides: dict[str, Callable[[], object]], rounds: int,
                  warmup: bool = True, quiet: bool = False) -> dict[str, list[float]]:
    """Wall seconds per call of each side over `rounds` rounds A, B, A, B, ... (one warm-up call
    of each first unless warmup=False; a line per round unless quiet). Also keeps process CPU
    seconds in `self.cpu_seconds`."""
    if warmup:
      for fn in sides.values():
        _block(fn())
    times = {name: [] for name in sides}
    self.cpu_seconds = {name: [] for name in sides}
    for r in range(rounds):
      for name, fn in sides.items():
        wall, cpu = time.perf_counter(), time.process_time()
        _block(fn())
        times[name].append(time.perf_counter() - wall)
        self.cpu_seconds[name].append(time.process_time() - cpu)
      load = self.sample_load()
      if not quiet:
        print(f"round {r + 1}/{rounds}: " + "  ".join(f"{n} {t[-1]:.3f} s" for n, t in times.items())
              + f"  load {load:.2f}", flush=True)
    return times

  def compare(self, times: dict[str, list[float]], baseline: str | None = None,
              work: dict[str, float] | None = None, unit: str = "calls") -> dict[str, Stats]:
    """Prints each side's best and median (and `work`/s in `unit` when given), and against
    `baseline` the ratio of bests and of medians. Returns the stats per side."""
    stats = {name: Stats.of(ts) for name, ts in times.items()}
    for name, s in stats.items():
      line = f"{name:>16}: best {s.best:.4f} s, median {s.median:.4f} s over {s.rounds} rounds"
      if work:
        line += f"; {work[name] / s.best:,.2f} / {work[name] / s.median:,.2f} {unit}/s (best / median)"
      if baseline and name != baseline:
        # Same work per call on both sides unless `work` says otherwise: compare rates.
        w = work or {}
        scale = w.get(name, 1.0) / w.get(baseline, 1.0)
        rb, rm = ratios(s, stats[baseline])
        line += f"; x{baseline}: {rb * scale:.2f} best, {rm * scale:.2f} median"
      print(line)
    return stats

  def finish(self) -> bool:
    """Prints the load after and whether the figures are contended; returns that."""
    self.sample_load()
    contended = is_contended(self.loads, self.cores)
    verdict = ("CONTENDED: load above the threshold, figures not valid for goals" if contended
               else "quiet: valid for goals")
    print(f"load after: {self.loads[-1]:.2f} (max {max(self.loads):.2f}, class {self.machine}): "
          f"{verdict}", flush=True)
    return contended


def start(title: str) -> Run:
  return Run(title)
