"""Run one jax program as N real processes on 127.0.0.1, as a multi-host job would run it.

Each process gets JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID (read by
mio_jax.parallel.mesh.maybe_initialize_distributed), `devices_per_process` forced CPU devices, and
the repository on PYTHONPATH. All processes are killed if any is still running at the timeout.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
from typing import Sequence

from mio_jax.parallel.cpu_devices import xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def process_env(process_id: int, num_processes: int, devices_per_process: int, port: int,
                env: dict[str, str] | None = None) -> dict[str, str]:
  out = dict(os.environ)
  out.update(
      JAX_PLATFORMS="cpu",
      XLA_FLAGS=xla_flags(os.environ.get("XLA_FLAGS", ""), devices_per_process),
      JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
      JAX_NUM_PROCESSES=str(num_processes),
      JAX_PROCESS_ID=str(process_id),
      PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p),
      PYTHONUNBUFFERED="1",
  )
  out.update(env or {})
  return out


def run_processes(argv: Sequence[str], num_processes: int, devices_per_process: int, *,
                  env: dict[str, str] | None = None, timeout: float = 180,
                  cwd: str = ROOT) -> list[subprocess.CompletedProcess]:
  """Start `argv` (e.g. [sys.executable, "script.py", ...]) as processes 0..N-1 of one job.

  Returns one CompletedProcess per process (stdout/stderr as text). On timeout every process is
  killed and TimeoutError names the ones still running, with the tail of their stderr.
  """
  port = free_port()
  logs, procs = [], []
  try:
    for i in range(num_processes):
      out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
      logs.append((out, err))
      procs.append(subprocess.Popen(list(argv), cwd=cwd, stdout=out, stderr=err, text=True,
                                    env=process_env(i, num_processes, devices_per_process, port, env)))
    deadline = time.monotonic() + timeout
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
      time.sleep(0.1)
    running = [i for i, p in enumerate(procs) if p.poll() is None]
    for p in procs:
      if p.poll() is None:
        p.kill()
      p.wait()
    results = []
    for p, (out, err) in zip(procs, logs):
      out.seek(0)
      err.seek(0)
      results.append(subprocess.CompletedProcess(list(argv), p.returncode, out.read(), err.read()))
    if running:
      tails = "; ".join(f"process {i}: {results[i].stderr[-500:]!r}" for i in running)
      raise TimeoutError(f"{len(running)} of {num_processes} processes still running after "
                         f"{timeout}s, killed ({tails})")
    return results
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
    for out, err in logs:
      out.close()
      err.close()

