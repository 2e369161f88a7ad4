"""Offline tokenization: raw media + text -> token shards (mio_jax.data.shards).

  python launch/tokenize.py --config=configs/tokenize.py:mini --config.output_dir=workdirs/tok \
      --config.image_tokenizer=DIR --config.speech_tokenizer=DIR

Several hosts: run the same command on each with --config.distributed_init=True (the split then
follows jax.process_index()/process_count()), or pass --config.process_index=I
--config.process_count=N. Rerun the same command after a crash to resume.
"""

import os
import sys

# This file's name shadows the standard library's `tokenize` (imported by inspect, linecache):
# take the launch/ folder off the import path before anything imports it, and put the repo on it.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))

from mio_jax.host_platform import default_to_cpu_without_accelerator  # noqa: E402

default_to_cpu_without_accelerator()  # before JAX starts: on a CPU-only machine libtpu stays quiet

from absl import app  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from mio_jax import storage  # noqa: E402
from mio_jax.config.tokenize_job import ConfigError, check_tokenize_config_keys  # noqa: E402
from mio_jax.tokenize import job  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/tokenize.py:PRESET", lock_config=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  try:
    check_tokenize_config_keys(_CONFIG.value)
  except ConfigError as e:
    sys.exit(f"config error: {e}")
  if _CONFIG.value.distributed_init:  # multi-host: every host then owns shards i % process_count
    import jax
    jax.distributed.initialize()
  try:
    summary = job.run(_CONFIG.value)
  except storage.StorageError as e:  # an unreachable bucket: one line naming the path
    sys.exit(f"tokenize failed: {e}")
  print(job.format_summary(summary), flush=True)
  if "job" not in summary and summary["process_count"] == 1:
    sys.exit("job incomplete: not every shard is committed")


if __name__ == "__main__":
  app.run(main)
