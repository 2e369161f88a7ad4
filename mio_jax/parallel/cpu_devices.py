"""Simulated CPU devices: a pod-shaped mesh on one host, for the demo, the evidence runs and tests.

XLA runs a CPU collective as a rendezvous of one thread per device and aborts the whole process
when a participant is 40 s late (its default). A host with fewer cores than simulated devices and
other work beside it (a 2-core CI box running two test workers) can be that late with nothing
wrong, so the simulated meshes get 5 minutes; a real deadlock still ends the process.
"""

from __future__ import annotations

import os
import re

COLLECTIVE_TIMEOUT_FLAGS = ("--xla_cpu_collective_call_warn_stuck_timeout_seconds=60",
                            "--xla_cpu_collective_call_terminate_timeout_seconds=300")


def xla_flags(flags: str, devices: int | None) -> str:
  """`flags` (an XLA_FLAGS value) with `devices` forced host devices (none given: the flag removed)
  and the collective timeouts above, unless `flags` already sets them."""
  flags = re.sub(r"--xla_force_host_platform_device_count=\S+", "", flags).split()
  if devices is not None:
    flags.append(f"--xla_force_host_platform_device_count={devices}")
  for flag in COLLECTIVE_TIMEOUT_FLAGS:
    if not any(f.startswith(flag.split("=")[0] + "=") for f in flags):
      flags.append(flag)
  return " ".join(flags)


def use_cpu_devices(devices: int) -> None:
  """`devices` CPU devices in this process; call before anything starts jax's backend."""
  import jax

  os.environ["XLA_FLAGS"] = xla_flags(os.environ.get("XLA_FLAGS", ""), None)
  jax.config.update("jax_num_cpu_devices", devices)
