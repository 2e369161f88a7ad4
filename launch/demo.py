"""`make demo`: the embedded default run on 2 CPU cores.

Today it trains the smoke configuration of each stage in sequence on 8 simulated CPU devices, each
stage starting from the last one's parameters (`init_from`), and prints what it did and where
everything is. The full recipe (tokenize the mini corpus, four stages, export, generate) is issue 9.
"""

import os
import sys

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# 8 host devices so the demo runs the same sharded step as a pod slice (set before jax loads).
os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the demo is the CPU run, even where libtpu is installed

import json  # noqa: E402
import time  # noqa: E402

from absl import app, flags  # noqa: E402

flags.DEFINE_string("workdir", "workdirs/demo", "Where each stage's run directory goes.")
flags.DEFINE_integer("steps", 0, "Steps per stage (0: the smoke config's own).")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  from mio_jax.console import setup_console_logging
  from configs.base import stage_config
  from mio_jax.train.loop import train

  setup_console_logging()
  previous, timings = "", []
  for stage in (1, 2, 3, 4):
    config = stage_config(stage, "smoke")
    if FLAGS.steps:
      config.train.steps = FLAGS.steps
    config.init_from = previous
    workdir = os.path.join(os.path.abspath(FLAGS.workdir), f"stage{stage}")
    start = time.perf_counter()
    result = train(config, workdir)
    timings.append((stage, config.stage_name, time.perf_counter() - start, result))
    previous = workdir

  print("\nmake demo: what it did")
  print(f"  data: seeded synthetic packed sequences (config.data.source='synthetic')")
  for stage, name, seconds, result in timings:
    losses = [result.losses[s] for s in sorted(result.losses)]
    rows = [json.loads(line) for line in open(os.path.join(result.workdir, "metrics.jsonl"))]
    print(f"  stage {stage} ({name}): {len(losses)} steps in {seconds:.0f}s, loss {losses[0]:.3f} -> "
          f"{losses[-1]:.3f}, {rows[-1]['tokens_per_second']:,.0f} tokens/s; {result.workdir}")
  print("  each stage: metrics.jsonl, tensorboard/, checkpoints/<step>/{params,opt_state,data}")


if __name__ == "__main__":
  app.run(main)
