"""Task metrics of a trained checkpoint on held-out token shards.

  python launch/evaluate.py --checkpoint /runs/stage3 --data "HELDOUT/shards/*.array_record" \\
      --report task_metrics.json

Captioning (CIDEr-D, BLEU-4) from each held-out image-text sample's image, ASR (WER, CER) from each
speech-text sample's speech, both generated greedily in the sample's training template and scored
against its own text; per-modality perplexity (text, image, speech) of all held-out samples laid out
as training lays them out. Prints a table; --report also writes the numbers and every generated text
as JSON. Held-out shards: what launch/tokenize.py writes from the held-out manifests
(mio_jax/tokenize/holdout.py). Needs the `eval` extra (pip install -e '.[eval]').
How to read each number: docs/evaluation.md.
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
  p.add_argument("--data", required=True, help="held-out token shards: glob(s), comma-separated")
  p.add_argument("--report", default=None, help="write the report as JSON here")
  p.add_argument("--stage", type=int, default=3, choices=(1, 2, 3, 4),
                 help="the stage whose templates lay out the samples (4 uses stage 3's, as it starts from it)")
  p.add_argument("--template_set", default=None, choices=("mio_release", "paper"),
                 help="the templates' wording (default: the run's config.data.template_set)")
  p.add_argument("--max_samples", type=int, default=0, help="first N samples per task (0: all)")
  p.add_argument("--max_new_tokens", type=int, default=32, help="longest caption / transcript generated")
  p.add_argument("--batch_size", type=int, default=8, help="sequences per generation / scoring batch")
  p.add_argument("--text_model", default=None, help="SentencePiece .model override")
  args = p.parse_args(argv)
  for name in ("max_samples", "max_new_tokens", "batch_size"):
    if getattr(args, name) < (0 if name == "max_samples" else 1):
      p.error(f"--{name}={getattr(args, name)} is out of range")
  return args


def run(args) -> dict:
  from mio_jax import storage
  from mio_jax.evaluate.tasks import format_table, read_samples, task_metrics
  from mio_jax.generate.load import checkpoint_template_set, load_model

  samples = read_samples(args.data)
  model, vocab = load_model(args.checkpoint, text_model=args.text_model)
  template_set = args.template_set or checkpoint_template_set(args.checkpoint)
  report = task_metrics(model, vocab, samples, stage=args.stage, max_samples=args.max_samples,
                        max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                        template_set=template_set)
  report = {"checkpoint": args.checkpoint, "data": args.data, **report}
  print(f"task metrics of {args.checkpoint} on {args.data} (stage {report['template_stage']} templates, "
        f"{template_set}):")
  print(format_table(report))
  if args.report:
    path = storage.as_path(args.report)
    path.parent.mkdir(parents=True, exist_ok=True)
    storage.atomic_write_text(path, json.dumps(report, indent=1))
    print(f"wrote {args.report}")
  return report


def main(argv=None):
  args = parse_args(argv)
  try:
    run(args)
  except (ValueError, FileNotFoundError, ImportError) as e:
    sys.exit(f"evaluate: {e}")


if __name__ == "__main__":
  main()
