"""Fit a k-means codebook (UniCode2's frozen codebook) on embedding files, on the device mesh.

  python launch/fit_codebook.py --config=configs/codebook.py:tiny --workdir=/tmp/codebook \\
      --config.data.embeddings=DIR

DIR holds .npy float files [n_i, d] (e.g. SigLIP patch embeddings). Rerunning with the same workdir
resumes from its latest checkpoint; several hosts run the same command (jax.distributed from the
JAX_* variables, as launch/train.py). The centroids end in WORKDIR/codebook.npy (docs/codebook.md).
"""

import os
import sys

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from mio_jax.host_platform import default_to_cpu_without_accelerator  # noqa: E402

default_to_cpu_without_accelerator()  # before JAX starts: on a CPU-only machine libtpu stays quiet

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

config_flags.DEFINE_config_file("config", None, "configs/codebook.py:PRESET", lock_config=True)
flags.DEFINE_string("workdir", None, "Where checkpoints, metrics.jsonl and codebook.npy go.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  from mio_jax import storage
  from mio_jax.codebook.fit import fit
  from mio_jax.config.codebook_job import ConfigError
  from mio_jax.console import setup_console_logging
  from mio_jax.parallel.mesh import MeshConfigError
  from mio_jax.train.checkpoint import CheckpointError

  setup_console_logging()
  try:
    result = fit(flags.FLAGS.config, flags.FLAGS.workdir)
  except (ConfigError, MeshConfigError) as e:
    sys.exit(f"config error: {e}")
  except storage.StorageError as e:
    sys.exit(f"storage error: {e}")
  except CheckpointError as e:
    sys.exit(f"checkpoint error: {e}")
  summary = ", ".join(f"{k} {v:.4g}" for k, v in result.last_pass.items())
  print(f"fitted {result.centroids.shape[0]} centroids over {result.passes} passes ({result.step} steps)"
        f": {summary}; {storage.as_str(flags.FLAGS.workdir)}/codebook.npy")


if __name__ == "__main__":
  app.run(main)
