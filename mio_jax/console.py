"""Console output for the entry points: our progress lines at INFO, library chatter at WARNING,
less the warnings known to be harmless."""

import logging
import sys
import time

from absl import logging as absl_logging


def keep_record(record: logging.LogRecord) -> bool:
  """False for warnings known to be harmless. orbax restoring one item (params) of a checkpoint
  step warns that the item has no _CHECKPOINT_METADATA: that file sits one folder up, at the step,
  and the restore is complete."""
  message = record.getMessage()
  return not (message.startswith("Metadata file does not exist: ")
              and message.endswith("_CHECKPOINT_METADATA"))


def setup_console_logging() -> None:
  absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every save step at INFO
  logging.getLogger("absl").addFilter(keep_record)  # orbax logs through absl; added once
  handler = logging.StreamHandler(sys.stdout)
  handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
  ours = logging.getLogger("mio_jax")
  ours.setLevel(logging.INFO)
  ours.handlers[:] = [handler]
  ours.propagate = False


def timed_step(log: list, label: str, what: str, fn, *args, **kwargs):
  """fn(*args, **kwargs), its wall seconds appended to `log` as (what, seconds) and printed as
  "[label] what: Ns" (the demo's and the evidence script's step lines)."""
  start = time.perf_counter()
  result = fn(*args, **kwargs)
  log.append((what, time.perf_counter() - start))
  print(f"[{label}] {what}: {log[-1][1]:.0f}s", flush=True)
  return result
