"""Compile a stage's train step for a TPU topology from this host (CPU is enough; needs libtpu).

  python launch/train_compile.py --config=configs/stage2.py --topology=v5p-128 \\
      [--num_slices=2] [--config.mesh.ici.tensor=4 ...] [--report=report.json]

Prints per-chip memory (arguments, temporaries, outputs) against the chip's HBM, the analytic model
FLOPs per step and a roofline lower bound on step time; `--report` writes them as JSON. A step that
does not fit is one line with the numbers and exit status 1 (as is a config that cannot work).
"""

import json
import os
import sys

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

config_flags.DEFINE_config_file("config", None, "Path to a config file, with :size after it.")
flags.DEFINE_string("topology", None, "TPU slice, as Cloud names it: v5p-128, v5e-256, v6e-64, v4-32.")
flags.DEFINE_integer("num_slices", 1, "Slices joined over the data-center network (config.mesh.dcn).")
flags.DEFINE_string("report", None, "Write the numbers as JSON here.")
flags.mark_flags_as_required(["config", "topology"])


def main(argv):
  del argv
  from mio_jax.console import setup_console_logging
  from mio_jax.parallel.tpu_topologies import TopologyNameError
  from mio_jax.train.aot import CompileOutOfMemory, compile_for_topology, format_report
  from mio_jax.train.validate import ConfigError

  setup_console_logging()
  try:
    report = compile_for_topology(flags.FLAGS.config, flags.FLAGS.topology, flags.FLAGS.num_slices)
  except (ConfigError, TopologyNameError) as e:
    sys.exit(f"config error: {e}")
  except CompileOutOfMemory as e:
    sys.exit(str(e))
  print(format_report(report))
  if flags.FLAGS.report:
    with open(flags.FLAGS.report, "w") as f:
      json.dump(report, f, indent=1)


if __name__ == "__main__":
  app.run(main)
