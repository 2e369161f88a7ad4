"""Simulated CPU devices: the XLA flags the tests, the demo and the evidence runs start with."""

import os
import subprocess
import sys

from mio_jax.parallel.cpu_devices import COLLECTIVE_TIMEOUT_FLAGS, xla_flags


def test_flags_set_the_device_count_once_and_keep_what_the_user_set():
  assert xla_flags("--xla_force_host_platform_device_count=4 --xla_cpu_max_isa=AVX2", 8).split() == [
      "--xla_cpu_max_isa=AVX2", "--xla_force_host_platform_device_count=8", *COLLECTIVE_TIMEOUT_FLAGS]
  assert xla_flags("--xla_force_host_platform_device_count=4", None).split() == list(COLLECTIVE_TIMEOUT_FLAGS)
  mine = "--xla_cpu_collective_call_terminate_timeout_seconds=5"
  assert xla_flags(mine, None).split() == [mine, COLLECTIVE_TIMEOUT_FLAGS[0]]
  assert sorted(xla_flags(xla_flags("", 2), 2).split()) == sorted(xla_flags("", 2).split())


def test_this_jaxlib_takes_the_flags_and_runs_a_collective():
  # XLA aborts on a flag it does not know, so a renamed flag shows here, not as a dead worker.
  code = ("import jax, jax.numpy as jnp\n"
          "from mio_jax.parallel.cpu_devices import use_cpu_devices\n"
          "use_cpu_devices(4)\n"
          "print(jax.pmap(lambda x: jax.lax.psum(x, 'd'), axis_name='d')(jnp.arange(4.)).tolist())\n")
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  run = subprocess.run([sys.executable, "-c", code], env=dict(env, JAX_PLATFORMS="cpu"), capture_output=True,
                       text=True, timeout=120)
  assert run.returncode == 0, run.stderr[-2000:]
  assert run.stdout.split("\n")[-2] == "[6.0, 6.0, 6.0, 6.0]"
