"""Export a checkpoint to a Hugging Face Llama directory (config.json, safetensors, tokenizer).

  python launch/export.py --checkpoint /runs/stage4 --out /exports/mio-stage4
  python launch/export.py --checkpoint /runs/stage4/checkpoints/6000 --out DIR --dtype bfloat16
  python launch/export.py --checkpoint DIR --out OUT --config configs/stage1.py:smoke  # no model_config.json
  python launch/export.py --checkpoint gs://bucket/run4 --out gs://bucket/exports/mio-stage4

The model and vocabulary come from the run's model_config.json unless --config names the training
config. Load the result with transformers: AutoModelForCausalLM.from_pretrained(OUT),
AutoTokenizer.from_pretrained(OUT). See docs/export.md.
"""

import os
import sys

# The repo root replaces this script's folder on the path (launch/tokenize.py shadows the stdlib).
sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from mio_jax.host_platform import default_to_cpu_without_accelerator  # noqa: E402

default_to_cpu_without_accelerator()  # before JAX starts: on a CPU-only machine libtpu stays quiet

import argparse  # noqa: E402
import json  # noqa: E402


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--checkpoint", required=True, help="workdir, checkpoints dir, step dir or params dir")
  p.add_argument("--out", required=True, help="output directory")
  p.add_argument("--config", default=None, help="training config file (path[:size]) if the run has "
                 "no model_config.json")
  p.add_argument("--text_model", "--text-model", default=None, help="SentencePiece .model override")
  p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
  p.add_argument("--max_shard_gb", "--max-shard-gb", type=float, default=5.0)
  p.add_argument("--max_position_embeddings", type=int, default=4096)
  p.add_argument("--no_tokenizer", "--no-tokenizer", action="store_true",
                 help="write weights and config only")
  return p.parse_args(argv)


def load_config_file(spec: str):
  """`configs/stageN.py[:size]` -> its ConfigDict, as --config of launch/train.py reads it."""
  import importlib.util

  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    sys.exit(f"--config={spec!r}: no such file")
  module_spec = importlib.util.spec_from_file_location("export_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg)


def main(argv=None):
  args = parse_args(argv)
  from mio_jax.console import setup_console_logging
  setup_console_logging()
  from mio_jax import storage
  from mio_jax.train.run_config import run_config_dict
  from mio_jax.export.to_hf import export

  run_config = run_config_dict(load_config_file(args.config)) if args.config else None
  try:
    summary = export(args.checkpoint, args.out, run_config=run_config, text_model=args.text_model,
                     dtype=args.dtype, with_tokenizer=not args.no_tokenizer,
                     max_shard_bytes=int(args.max_shard_gb * 2**30),
                     max_position_embeddings=args.max_position_embeddings)
  except (ValueError, FileNotFoundError, storage.StorageError) as e:
    sys.exit(f"export failed: {e}")
  print(json.dumps({"out": storage.as_str(args.out), **summary}, indent=2))


if __name__ == "__main__":
  main()
