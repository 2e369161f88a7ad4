"""config.train.profile_steps = (first, count): a jax.profiler trace of training steps first ..
first + count - 1 (count 0: off), in WORKDIR/profile/process_<i>/plugins/profile/<time>/ as
`<host>.xplane.pb` (TensorBoard's profile plugin, xprof) and `<host>.trace.json.gz` (Perfetto,
chrome://tracing). Each process traces itself into its own folder; a gs:// WORKDIR gets the files
uploaded when the window ends.
"""

from __future__ import annotations

import logging
import os
import tempfile

import jax

from mio_jax import storage

log = logging.getLogger("mio_jax.train")


class ProfileWindow:
  """Call `before_step(n)` before dispatching step n and `after_step(n, outputs)` after it."""

  def __init__(self, workdir: str, profile_steps):
    self.first, count = (int(x) for x in profile_steps)
    self.last = self.first + count - 1 if count else 0
    self.dest = storage.as_path(workdir) / "profile" / f"process_{jax.process_index()}"
    self.remote = storage.is_remote(self.dest)
    self.local = None

  def before_step(self, step: int) -> None:
    if self.last and step == self.first:
      self.local = tempfile.mkdtemp(prefix="mio_profile_") if self.remote else os.fspath(self.dest)
      jax.profiler.start_trace(self.local)

  def after_step(self, step: int, outputs) -> None:
    if self.local is not None and step >= self.last:
      jax.block_until_ready(outputs)  # the trace holds the window's device work, not just its dispatch
      self.stop()
      log.info("profiled steps %d-%d: %s", self.first, self.last, self.dest)

  def stop(self) -> None:
    """Ends a trace still running (a run that stopped inside the window)."""
    if self.local is None:
      return
    jax.profiler.stop_trace()
    if self.remote:
      for root, _, files in os.walk(self.local):
        for name in files:
          path = os.path.join(root, name)
          storage.upload(path, self.dest / os.path.relpath(path, self.local))
    self.local = None
