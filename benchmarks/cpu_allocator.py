"""Train steps on CPU under glibc's malloc against mimalloc preloaded (mio_jax/cpu_allocator.py).

    python benchmarks/cpu_allocator.py [--preset tiny --batch 8 --seq 576 --devices 2] [--rounds 3]

The allocator is chosen when a process starts, so every round runs benchmarks/train_step.py once
per side in a fresh process (glibc, mimalloc, glibc, mimalloc, ...; benchmarks/protocol.py), with
the demo's shapes by default: the tiny preset, 8 x 576 tokens, 2 simulated devices. Each side's
seconds per step come from the child's own timing (compile and warm-up excluded); the child's minor
page faults per step are printed beside them.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks import protocol  # noqa: E402
from mio_jax import cpu_allocator  # noqa: E402
from mio_jax.parallel.cpu_devices import xla_flags  # noqa: E402


def run_side(preload: str, args) -> tuple[float, float]:
  """(seconds per step, minor page faults per step) of one child run."""
  env = {**os.environ, "LD_PRELOAD": preload, "JAX_PLATFORMS": "cpu",
         "XLA_FLAGS": xla_flags(os.environ.get("XLA_FLAGS", ""), args.devices)}
  cmd = [sys.executable, os.path.join(REPO, "benchmarks", "train_step.py"), f"--preset={args.preset}",
         f"--batch={args.batch}", f"--seq={args.seq}", f"--steps={args.steps}", "--rounds=1", "--notorch"]
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  rate = float(re.search(r"^mio_jax: ([\d,]+) tokens/s", out, re.M).group(1).replace(",", ""))
  # The faults cover the whole child (start, compile, warm-up step): an upper bound per step.
  return args.batch * args.seq / rate, (after.ru_minflt - before.ru_minflt) / (args.steps + 1)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--preset", default="tiny")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--seq", type=int, default=576)
  parser.add_argument("--devices", type=int, default=2)
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--rounds", type=int, default=3)
  args = parser.parse_args()
  mimalloc = cpu_allocator.library()
  if mimalloc is None:
    sys.exit("benchmarks/cpu_allocator.py: cmeel-mimalloc is not installed (make venv installs it)")
  run = protocol.start(f"train step on CPU: glibc malloc vs mimalloc ({args.preset}, "
                       f"{args.batch} x {args.seq}, {args.devices} devices)")
  sides = {"glibc": "", "mimalloc": mimalloc}
  times = {name: [] for name in sides}
  faults = {name: [] for name in sides}
  for r in range(args.rounds):
    for name, preload in sides.items():
      step, fault = run_side(preload, args)
      times[name].append(step)
      faults[name].append(fault)
    load = run.sample_load()
    print(f"round {r + 1}/{args.rounds}: " + "  ".join(
        f"{n} {times[n][-1]:.3f} s/step ({faults[n][-1]:,.0f} page faults/step)"
        for n in sides) + f"  load {load:.2f}", flush=True)
  run.compare(times, baseline="glibc", work={n: float(args.batch * args.seq) for n in sides},
              unit="tokens")
  run.finish()


if __name__ == "__main__":
  main()
