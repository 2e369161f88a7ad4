"""What a run does when a step's loss or gradient norm is not finite (config.train.on_nonfinite).

- "halt" (default): stop at the first such step, save nothing of it, exit non-zero naming the step.
  The loop checks every step's flag before each checkpoint, so no saved state holds a diverged
  update and keep-N never evicts the last good checkpoint for a bad one.
- "skip": the step leaves params and optimizer state unchanged (the train step's `skip_nonfinite`);
  the step is counted and logged; `max_consecutive_skips` skips in a row halt as above.
"""

from __future__ import annotations

import logging

log = logging.getLogger("mio_jax.train")

POLICIES = ("halt", "skip")


class TrainingHalted(RuntimeError):
  """The run stopped on a non-finite loss; its message is the one line for the user."""


class NonFiniteGuard:

  def __init__(self, policy: str, max_consecutive_skips: int):
    if policy not in POLICIES:
      raise ValueError(f"config.train.on_nonfinite={policy!r} is not one of {POLICIES}")
    self.policy, self.max_consecutive = policy, max_consecutive_skips
    self.consecutive = 0
    self.skipped = 0

  def observe(self, step: int, finite: bool, loss: float, grad_norm: float) -> None:
    """Raise TrainingHalted when the policy says the run must stop at `step`."""
    if finite:
      self.consecutive = 0
      return
    what = f"loss {loss} and gradient norm {grad_norm}"
    if self.policy == "halt":
      raise TrainingHalted(f"step {step}: {what} (config.train.on_nonfinite='halt'); nothing from "
                           "this step on was saved")
    self.consecutive += 1
    self.skipped += 1
    log.warning("step %d skipped: %s (%d in a row)", step, what, self.consecutive)
    if self.consecutive >= self.max_consecutive:
      raise TrainingHalted(f"step {step}: {self.consecutive} non-finite steps in a row (config.train."
                           f"max_consecutive_skips={self.max_consecutive}); last: {what}")
