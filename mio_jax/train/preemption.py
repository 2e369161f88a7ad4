"""Preemption notices: SIGTERM in one process, jax's preemption sync point across many.

A pod scheduler sends SIGTERM some time before it takes the machines. The loop asks `reached(step)`
after every step; when it says yes, the loop saves exactly that step and exits with status 0, and
rerunning the same command resumes there.

- Many processes (jax.distributed initialised): jax's preemption service owns SIGTERM and agrees on
  one step for all hosts (the next after the largest step any host has reached when the notice
  arrived); `multihost_utils.reached_preemption_sync_point` is true on every host at that step.
  orbax's `reached_preemption` wraps the same call.
- One process: a Python SIGTERM handler sets a flag; the step in flight finishes first.
"""

from __future__ import annotations

import logging
import signal
import threading

import jax
from jax.experimental import multihost_utils

log = logging.getLogger("mio_jax.train")


class PreemptionWatcher:
  """Context manager; `reached(step)` is True once, at the step where the job should save and stop."""

  def __init__(self):
    self._flag = threading.Event()
    self._previous = None
    self._multi = jax.distributed.is_initialized()

  def __enter__(self) -> "PreemptionWatcher":
    if not self._multi and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
    return self

  def __exit__(self, *exc) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None

  def _on_sigterm(self, signum, frame) -> None:
    del signum, frame
    self._flag.set()

  def reached(self, step: int) -> bool:
    if self._multi:
      try:
        return multihost_utils.reached_preemption_sync_point(step)
      except RuntimeError:  # the preemption service is disabled (jax_enable_preemption_service)
        return False
    return self._flag.is_set()
