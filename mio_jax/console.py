"""Console output for the entry points: our progress lines at INFO, library chatter at WARNING,
less the warnings known to be harmless."""

import logging
import sys

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
