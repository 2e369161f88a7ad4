"""Train a MIO-style model.

  python launch/train.py --config=configs/stage2.py --workdir=/path/to/run \\
      --config.optimizer.peak_lr=1e-4 --config.mesh.ici.tensor=4

`--config=configs/stageN.py:smoke` runs the tiny CPU configuration; add
`--config.data.mixed_shards='OUT/shards/*.array_record'` to train it on a tokenization job's shards.
Rerunning with the same workdir resumes from its latest checkpoint.
"""

import os
import sys

# The repo root replaces this script's folder on the path: launch/tokenize.py must not shadow the
# standard library's tokenize module.
sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

config_flags.DEFINE_config_file("config", None, "Path to a config file, with :size after it.")
flags.DEFINE_string("workdir", None, "Where checkpoints, metrics.jsonl and TensorBoard events go.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  from mio_jax.console import setup_console_logging
  from mio_jax.data.config import shards_if_mixed
  from mio_jax.train.loop import train
  from mio_jax.train.validate import ConfigError

  setup_console_logging()
  shards_if_mixed(flags.FLAGS.config)  # --config.data.mixed_shards=GLOB trains on those shards
  try:
    result = train(flags.FLAGS.config, flags.FLAGS.workdir)
  except ConfigError as e:
    sys.exit(f"config error: {e}")
  print(f"trained to step {result.final_step}; workdir {os.path.abspath(result.workdir)}")


if __name__ == "__main__":
  app.run(main)
