"""Import a Hugging Face Llama checkpoint (e.g. Yi-6B-Base) as an orbax checkpoint of our model.

  python launch/import_hf.py --hf /models/Yi-6B --out /runs/yi-mio-init
  python launch/train.py --config=configs/stage1.py --workdir=/runs/stage1 \\
      --config.init_from=/runs/yi-mio-init

  python launch/import_hf.py --hf /models/MIO-7B-Instruct --out /runs/mio7b-init   # MIO's release

The embedding and LM head grow to the full multimodal vocabulary; the layout comes from
--vocab_config (a mio_jax.json or a JSON dict of config.vocab fields), else the HF directory's
mio_jax.json, else MIO-7B's released layout (config.json's text_vocab_size, visual_vocab_size, ...
and the tokenizer's <img0>/<spch0> ids), else MIO-7B's code layout after the checkpoint's text ids.
See docs/export.md.
"""

import os
import sys

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from mio_jax.host_platform import default_to_cpu_without_accelerator  # noqa: E402

default_to_cpu_without_accelerator()  # before JAX starts: on a CPU-only machine libtpu stays quiet

import argparse  # noqa: E402
import json  # noqa: E402


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--hf", required=True, help="HF checkpoint directory (config.json + safetensors)")
  p.add_argument("--out", required=True, help="output directory (use it as config.init_from)")
  p.add_argument("--vocab_config", "--vocab-config", default=None,
                 help="JSON vocabulary layout (mio_jax.json, or text_size/image_codes/... fields)")
  p.add_argument("--text_model", "--text-model", default=None, help="SentencePiece .model")
  p.add_argument("--noise", type=float, default=None,
                 help="new rows: mean row + noise * per-dimension std * N(0,1) (default 0.01)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--vocab_multiple", "--vocab-multiple", type=int, default=1,
                 help="pad the vocabulary to a multiple of this with zero rows, as the MIO-7B and 1B "
                      "presets are (1024); 1: no padding, as the CPU presets")
  return p.parse_args(argv)


def main(argv=None):
  args = parse_args(argv)
  from mio_jax.console import setup_console_logging
  setup_console_logging()
  from mio_jax.export.from_hf import DEFAULT_NOISE, import_hf
  from mio_jax.export.vocab_layout import read_layout

  try:
    vocab_cfg = read_layout(args.vocab_config) if args.vocab_config else None
    summary = import_hf(args.hf, args.out, vocab_cfg=vocab_cfg, text_model=args.text_model,
                        noise=DEFAULT_NOISE if args.noise is None else args.noise, seed=args.seed,
                        vocab_multiple=args.vocab_multiple)
  except (ValueError, FileNotFoundError, KeyError) as e:
    sys.exit(f"import failed: {e}")
  print(json.dumps(summary, indent=2))


if __name__ == "__main__":
  main()
