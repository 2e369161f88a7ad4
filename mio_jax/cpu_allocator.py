"""mimalloc for CPU runs: what to preload so that XLA's per-step buffers are not page-faulted anew.

XLA's CPU runtime allocates an execution's temporaries when it starts and frees them when it ends
(the demo's train step: 369 MiB a device). glibc serves every block over 32 MiB with an mmap of its
own and unmaps it on free, so each step faults all of its temporaries in again, page by page: 7.5
million minor faults and 13 s of kernel time in a 40-step run of the demo's stage 1 on 2 cores.
mimalloc (Microsoft's allocator, from the cmeel-mimalloc wheel the Makefile installs) keeps freed
memory for the next step: the demo's train step 0.36 s against 0.51 s (benchmarks/cpu_allocator.py,
docs/benchmarks.md). glibc's own knobs (M_MMAP_MAX=0, a high trim threshold) did not change the
fault count here.

A C allocator has to be in place before the process starts (LD_PRELOAD). `python -m
mio_jax.cpu_allocator` prints the LD_PRELOAD value to start a CPU run with: the current one with
mimalloc in front, or the current one unchanged where mimalloc is not installed, does not load
(another OS, no wheel for this platform), an allocator is already preloaded, or
MIO_JAX_CPU_ALLOCATOR=system asks for glibc. So this is always safe:

    LD_PRELOAD="$(python -m mio_jax.cpu_allocator)" python launch/train.py --config=...

The Makefile starts `make test`, `make test-slow` and `make demo` this way. Accelerator runs gain
nothing from it (their big buffers live on the device) and need not bother.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import sysconfig

# Allocators that replace malloc when preloaded; with one of these already there, add nothing.
_ALLOCATORS = ("mimalloc", "tcmalloc", "jemalloc")


def library() -> str | None:
  """The mimalloc shared library of this environment's cmeel-mimalloc wheel, if it can be preloaded."""
  if not sys.platform.startswith("linux"):
    return None
  lib = os.path.join(sysconfig.get_paths()["platlib"], "cmeel.prefix", "lib")
  for path in sorted(glob.glob(os.path.join(lib, "libmimalloc.so.*")), key=len):  # .so.3 before .so.3.4
    # The dynamic loader only warns when a preload fails (a missing libatomic, say), on every start
    # of every process: try it once here, quietly, and leave it out if the loader complains.
    probe = subprocess.run([sys.executable, "-c", ""], env={**os.environ, "LD_PRELOAD": path},
                           capture_output=True, text=True, check=False)
    if probe.returncode == 0 and not probe.stderr.strip():
      return path
  return None


def preload_value(env=None) -> str:
  """The LD_PRELOAD value for a CPU run under `env` (default: this process's environment)."""
  env = os.environ if env is None else env
  current = env.get("LD_PRELOAD", "").strip()
  if env.get("MIO_JAX_CPU_ALLOCATOR", "mimalloc") == "system":
    return current
  if any(name in os.path.basename(part) for part in current.replace(":", " ").split()
         for name in _ALLOCATORS):
    return current
  path = library()
  return " ".join(p for p in (path, current) if p)


if __name__ == "__main__":
  print(preload_value())
