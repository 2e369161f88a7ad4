"""mio_jax/cpu_allocator.py: the library it names for LD_PRELOAD really serves XLA's buffers (a
program's 64 MiB temporary is not faulted in again on every call, as it is under glibc) and changes
no result; and the LD_PRELOAD value it builds respects what is already there."""

import json
import os
import subprocess
import sys

import pytest

from mio_jax import cpu_allocator

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# One call: [4096, 64] @ [64, 4096] -> a float32 [4096, 4096] temporary (64 MiB), tanh, @ [4096, 64].
# The first call compiles and warms up; the next four are counted.
PROGRAM = """
import hashlib, json, resource
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_platforms", "cpu")
f = jax.jit(lambda a, b: jnp.tanh(a @ b) @ b.T)
a = jnp.linspace(-1, 1, 4096 * 64, dtype=jnp.float32).reshape(4096, 64)
b = jnp.linspace(1, -1, 64 * 4096, dtype=jnp.float32).reshape(64, 4096) / 8
out = f(a, b).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
  out = f(a, b).block_until_ready()
print(json.dumps({"faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before,
                  "mimalloc": "libmimalloc" in open("/proc/self/maps").read(),
                  "digest": hashlib.sha256(np.asarray(out).tobytes()).hexdigest()}))
"""


def _run(preload: str) -> dict:
  env = {**os.environ, "LD_PRELOAD": preload, "XLA_FLAGS": ""}
  out = subprocess.run([sys.executable, "-c", PROGRAM], env=env, capture_output=True, text=True,
                       timeout=300, check=True, cwd=REPO)
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_mimalloc_keeps_the_temporaries_and_the_result():
  path = cpu_allocator.library()
  if path is None:
    pytest.skip("cmeel-mimalloc is not installed here (the Makefile installs it where a wheel exists)")
  with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
    if "[always]" in f.read():
      pytest.skip("transparent huge pages 'always': glibc's mmaps fault in 2 MiB at a time")
  system = _run("")
  fast = _run(cpu_allocator.preload_value({}))
  # By hand: 4 calls x 64 MiB / 4 KiB pages = 65,536 faults under glibc, a fresh mmap each call.
  expected = 4 * (64 << 20) // os.sysconf("SC_PAGE_SIZE")
  assert not system["mimalloc"] and fast["mimalloc"]
  assert system["faults"] >= 0.9 * expected, system
  assert fast["faults"] < 0.01 * expected, fast
  assert fast["digest"] == system["digest"]


def test_preload_value_keeps_what_is_there():
  path = cpu_allocator.library()
  assert cpu_allocator.preload_value({"MIO_JAX_CPU_ALLOCATOR": "system"}) == ""
  assert cpu_allocator.preload_value({"MIO_JAX_CPU_ALLOCATOR": "system", "LD_PRELOAD": "/x/liba.so"}) \
      == "/x/liba.so"
  tc = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"
  assert cpu_allocator.preload_value({"LD_PRELOAD": tc}) == tc  # one allocator at a time
  assert cpu_allocator.preload_value({"LD_PRELOAD": f"/x/liba.so:{tc}"}) == f"/x/liba.so:{tc}"
  other = cpu_allocator.preload_value({"LD_PRELOAD": "/x/liba.so"})
  assert other == (f"{path} /x/liba.so" if path else "/x/liba.so")


def test_the_command_prints_the_value(tmp_path):
  env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MIO_JAX_CPU_ALLOCATOR")}
  out = subprocess.run([sys.executable, "-m", "mio_jax.cpu_allocator"], env=env, cwd=REPO,
                       capture_output=True, text=True, check=True)
  assert out.stdout.strip() == (cpu_allocator.library() or "")
  assert out.stderr == ""


def test_a_library_the_loader_rejects_is_left_out(tmp_path, monkeypatch):
  lib = tmp_path / "cmeel.prefix" / "lib"
  lib.mkdir(parents=True)
  (lib / "libmimalloc.so.3").write_text("not an ELF file")  # the loader warns on every start
  monkeypatch.setattr(cpu_allocator.sysconfig, "get_paths", lambda: {"platlib": str(tmp_path)})
  assert cpu_allocator.library() is None
  assert cpu_allocator.preload_value({"LD_PRELOAD": "/x/liba.so"}) == "/x/liba.so"
