"""Console output for the entry points: our progress lines at INFO, library chatter at WARNING."""

import logging
import sys

from absl import logging as absl_logging


def setup_console_logging() -> None:
  absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every save step at INFO
  handler = logging.StreamHandler(sys.stdout)
  handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
  ours = logging.getLogger("mio_jax")
  ours.setLevel(logging.INFO)
  ours.handlers[:] = [handler]
  ours.propagate = False
