"""Tokenization throughput: the whole job (read, decode in threads, encode, write shards) against the
encoders alone on already-decoded inputs, same samples, same batch size, one run. Goal: >= 90%.

  python benchmarks/tokenize_throughput.py [--kind image_text|speech_text] [--repeat 2]
      [--batch 8] [--shard_size 64] [--workers 4] [--trials 3]
      [--image_tokenizer DIR --speech_tokenizer DIR]

Without tokenizer folders it builds the tiny random-weight ones (mio_jax.tokenize.tiny_tokenizers).
Both measurements run after a warm-up pass, so neither includes compilation; they interleave for
--trials rounds (benchmarks/protocol.py); `ratio` compares the best time of each (the least
disturbed by other processes), `ratio_of_medians` their medians.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Corpus subsets and the mini job config are test helpers (tests/tokenize_helpers.py), not package code.
sys.path.append(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

import jax  # noqa: E402

from benchmarks import protocol  # noqa: E402
from mio_jax.tokenize import encoders, job, manifests, media, tiny_tokenizers  # noqa: E402
import tokenize_helpers as helpers  # noqa: E402


def repeated_manifest(kind: str, repeat: int, out_dir: str) -> str:
  """data/mini's manifest of `kind`, `repeat` times over (absolute media paths)."""
  (path,) = helpers.subset_manifests(out_dir, {kind: 10 ** 9})
  with open(path) as f:
    rows = f.read()
  with open(path, "w") as f:
    f.write(rows * repeat)
  return path


def decoded_media(kind, samples, cfg) -> list:
  """The pixels or waves the job would encode, decoded beforehand (the encoder-only side's input)."""
  key, typ = ("pixels", "image") if kind == "image_text" else ("wave", "speech")
  decoded = [media.decode_sample(s, cfg) for s in samples]
  return [p[key] for parts in decoded for p in parts if p["type"] == typ]


def encode_only(kind, inputs, pair, batch) -> None:
  """The encoders alone, batched exactly as the job batches them."""
  image, speech = pair
  if kind == "image_text":
    encoders.encode_images(image, inputs, batch)
  else:
    encoders.encode_speech(speech, inputs, batch)


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--kind", default="image_text", choices=("image_text", "speech_text"))
  ap.add_argument("--repeat", type=int, default=1, help="passes over the mini manifest")
  ap.add_argument("--batch", type=int, default=8)
  ap.add_argument("--shard_size", type=int, default=64)
  ap.add_argument("--workers", type=int, default=4)
  ap.add_argument("--trials", type=int, default=3, help="alternating timed runs; the best of each counts")
  ap.add_argument("--image_tokenizer", default="")
  ap.add_argument("--speech_tokenizer", default="")
  args = ap.parse_args()
  run = protocol.start(f"tokenization job vs encoders alone ({args.kind})")

  tmp = tempfile.mkdtemp(prefix="tokenize_bench_")
  speech_dir, image_dir = args.speech_tokenizer, args.image_tokenizer
  if not (speech_dir and image_dir):
    speech_dir, image_dir = tiny_tokenizers.make_tiny_tokenizers(os.path.join(tmp, "tokenizers"))
  manifest = repeated_manifest(args.kind, args.repeat, os.path.join(tmp, "in"))

  c = helpers.job_config(manifest, os.path.join(tmp, "warmup"), shard_size=args.shard_size)
  c.image_tokenizer, c.speech_tokenizer = image_dir, speech_dir
  c.image_batch_size = c.speech_batch_size = args.batch
  c.speech_pad_multiple = 0
  c.num_workers = args.workers
  pair = encoders.build_encoders(c)
  samples = manifests.read_inputs(manifest)
  cfg = job.media_config(c, pair[0])

  inputs = decoded_media(args.kind, samples, cfg)
  encode_only(args.kind, inputs, pair, args.batch)  # warm-up: compile every shape
  job.run(c, pair)  # warm-up of the job's own path (thread pool, shard writer, partial batches)
  trial = iter(range(10 ** 9))

  def end_to_end():
    c.output_dir = os.path.join(tmp, f"timed{next(trial)}")
    summary = job.run(c, pair)
    assert summary["job"]["written"] == len(samples), summary

  times = run.interleaved({"encoder only": lambda: encode_only(args.kind, inputs, pair, args.batch),
                           "end to end": end_to_end}, args.trials, warmup=False)
  run.compare(times, baseline="encoder only", work={k: float(len(samples)) for k in times}, unit="samples")
  enc_times, e2e_times = times["encoder only"], times["end to end"]
  enc_s, e2e_s = min(enc_times), min(e2e_times)

  n = len(samples)
  result = {
      "kind": args.kind, "samples": n, "batch": args.batch, "devices": jax.local_device_count(),
      "backend": jax.default_backend(), "workers": args.workers, "shard_size": args.shard_size,
      "encoder_only_samples_per_s": round(n / enc_s, 2), "end_to_end_samples_per_s": round(n / e2e_s, 2),
      "ratio": round(enc_s / e2e_s, 3), "goal": 0.9,
      "ratio_of_medians": round(statistics.median(enc_times) / statistics.median(e2e_times), 3),
      "encoder_only_s": [round(t, 2) for t in enc_times], "end_to_end_s": [round(t, 2) for t in e2e_times],
  }
  print(json.dumps(result, indent=1))
  run.finish()


if __name__ == "__main__":
  main()
