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

from mio_jax.host_platform import default_to_cpu_without_accelerator  # noqa: E402

default_to_cpu_without_accelerator()  # before JAX starts: on a CPU-only machine libtpu stays quiet

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

config_flags.DEFINE_config_file("config", None, "Path to a config file, with :size after it.")
flags.DEFINE_string("workdir", None, "Where checkpoints, metrics.jsonl and TensorBoard events go.")
flags.mark_flags_as_required(["config", "workdir"])


def _stop(message: str) -> None:
  """Exit 1 with `message` as the last line. A multi-process job ends at once, skipping jax's exit
  handlers (the distributed shutdown barrier, the collectives' teardown): every process reaches the
  same error, and once a process that had printed it waited there over 2 minutes for one already
  gone."""
  import jax
  if not jax.distributed.is_initialized():  # one process (jax.process_count() would start a backend)
    sys.exit(message)
  sys.stdout.flush()
  print(message, file=sys.stderr, flush=True)
  os._exit(1)


def main(argv):
  del argv
  from mio_jax import storage
  from mio_jax.console import setup_console_logging
  from mio_jax.train.checkpoint import CheckpointError
  from mio_jax.train.divergence import TrainingHalted
  from mio_jax.train.loop import train
  from mio_jax.parallel.mesh import MeshConfigError
  from mio_jax.train.validate import ConfigError

  setup_console_logging()
  try:
    result = train(flags.FLAGS.config, flags.FLAGS.workdir)
  except (ConfigError, MeshConfigError) as e:  # bad config, or a job launched without its coordinator
    _stop(f"config error: {e}")
  except storage.StorageError as e:
    _stop(f"storage error: {e}")
  except TrainingHalted as e:
    _stop(f"training halted: {e}")
  except CheckpointError as e:
    _stop(f"checkpoint error: {e}")
  if result.preempted:  # exit 0: the scheduler reruns the same command, which resumes
    print(f"preempted at step {result.final_step}, saved; workdir {storage.as_str(result.workdir)}")
  else:
    print(f"trained to step {result.final_step}; workdir {storage.as_str(result.workdir)}")


if __name__ == "__main__":
  app.run(main)
