"""`make demo`: the embedded default, end to end on 2 CPU cores.

  1. tiny random-weight tokenizers in the ported formats (VQGAN, SpeechTokenizer)
  2. the mini corpus (data/mini) -> token shards with launch/tokenize.py's job
  3. stages 1 to 4 (`:smoke` configs) on those shards, on 8 simulated devices, each stage starting
     from the previous one's parameters
  4. the final checkpoint exported to a Hugging Face Llama folder

It prints what it did, where everything is and how long each step took. Generation, decoded media
and the learning-evidence check are issue 9's remaining work.
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

flags.DEFINE_string("workdir", "workdirs/demo", "Where everything the demo makes goes.")
flags.DEFINE_integer("steps", 0, "Steps per stage (0: the smoke config's own).")
FLAGS = flags.FLAGS


def timed(log: list, what: str, fn, *args, **kwargs):
  start = time.perf_counter()
  result = fn(*args, **kwargs)
  log.append((what, time.perf_counter() - start))
  print(f"[demo] {what}: {log[-1][1]:.0f}s", flush=True)
  return result


def tokenize_mini_corpus(root: str, log: list) -> str:
  from configs.tokenize import get_config
  from mio_jax.tokenize import job, tiny_tokenizers

  speech_dir, image_dir = timed(log, "tiny tokenizers", tiny_tokenizers.make_tiny_tokenizers,
                                os.path.join(root, "tokenizers"))
  config = get_config("mini")
  config.update(output_dir=os.path.join(root, "tokens"), image_tokenizer=image_dir,
                speech_tokenizer=speech_dir, progress=False)
  summary = timed(log, "tokenize data/mini", job.run, config)
  print(f"[demo] tokenized: {json.dumps(summary)}")
  return os.path.join(config.output_dir, "shards", "*.array_record")


def train_stages(root: str, shards: str, log: list) -> list:
  from configs.base import stage_config
  from mio_jax.data.config import use_mixed_shards
  from mio_jax.train.loop import train

  previous, results = "", []
  for stage in (1, 2, 3, 4):
    config = stage_config(stage, "smoke")
    config.data.source = "shards"
    use_mixed_shards(config.data, shards)
    if FLAGS.steps:
      config.train.steps = FLAGS.steps
    config.init_from = previous
    workdir = os.path.join(root, f"stage{stage}")
    results.append((stage, config.stage_name, timed(log, f"stage {stage} ({config.stage_name})", train,
                                                    config, workdir)))
    previous = workdir
  return results


def main(argv):
  del argv
  from mio_jax.console import setup_console_logging
  from mio_jax.export.to_hf import export

  setup_console_logging()
  root, log = os.path.abspath(FLAGS.workdir), []
  shards = tokenize_mini_corpus(root, log)
  results = train_stages(root, shards, log)
  hf_dir = os.path.join(root, "hf_export")
  timed(log, "export to Hugging Face", export, results[-1][2].workdir, hf_dir)

  print("\nmake demo: what it did")
  for what, seconds in log:
    print(f"  {what:<34} {seconds:6.0f}s")
  for stage, name, result in results:
    losses = [result.losses[s] for s in sorted(result.losses)]
    rows = [json.loads(line) for line in open(os.path.join(result.workdir, "metrics.jsonl"))]
    print(f"  stage {stage} ({name}): loss {losses[0]:.3f} -> {losses[-1]:.3f} over {len(losses)} steps, "
          f"{rows[-1]['tokens_per_second']:,.0f} tokens/s; {result.workdir}")
  print(f"  token shards: {os.path.dirname(shards)}")
  print(f"  Hugging Face export (transformers loads it): {hf_dir}")


if __name__ == "__main__":
  app.run(main)
