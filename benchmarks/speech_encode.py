"""SpeechTokenizer encode throughput on CPU: Flax port vs the PyTorch reference, same batch, one run.

  python benchmarks/speech_encode.py [--batch 4] [--seconds 4] [--repeats 3] [--small]

Prints seconds of audio encoded per second of wall time (and per CPU-second, steadier on a
shared box) for each and their ratio. The batch is
synthetic espeak-ng speech cut to equal length (the PyTorch model has no per-clip lengths), plus
one run of the Flax port on the same clips at their own lengths (masked path). Weights are
random-init from the released config; throughput does not depend on their values.
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def timed(fn) -> tuple[float, float]:
  """(wall seconds, process CPU seconds over all threads) of one call."""
  wall, cpu = time.perf_counter(), time.process_time()
  fn()
  return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=4)
  parser.add_argument("--seconds", type=float, default=4.0)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--small", action="store_true", help="reduced widths (quick smoke run)")
  args = parser.parse_args()

  import jax
  import torch
  from tokenizers_port.speechtokenizer import load, reference
  from tokenizers_port.speechtokenizer.convert import convert
  from tokenizers_port.speechtokenizer.synth import corpus

  config = reference.SMALL_CONFIG if args.small else reference.OFFICIAL_CONFIG
  model = reference.build_reference(config)
  clips = corpus(args.batch, seed=1)
  n = int(args.seconds * config["sample_rate"])
  batch = np.stack([np.resize(c, n) for c in clips]).astype(np.float32)  # tile short clips
  with tempfile.TemporaryDirectory() as tmp:
    ckpt, cfg_json = reference.save_released_layout(model, config, os.path.join(tmp, "torch"))
    convert(ckpt, cfg_json, os.path.join(tmp, "flax"))
    tok = load(os.path.join(tmp, "flax"), pad_multiple=320)

  x = torch.from_numpy(batch)[:, None]
  var_clips = [c[:n] for c in clips]
  runs = {
      "pytorch": lambda: model.encode(x),
      "flax": lambda: tok.encode(batch),
      "flax varlen": lambda: tok.encode(var_clips),
  }
  audio = {"pytorch": batch.size, "flax": batch.size,
           "flax varlen": sum(c.shape[0] for c in var_clips)}
  times = {k: [] for k in runs}
  with torch.no_grad():
    for fn in runs.values():
      fn()  # warm-up / compile
    for _ in range(args.repeats):  # interleaved, so load changes on a shared box hit all alike
      for k, fn in runs.items():
        times[k].append(timed(fn))
  rate = config["sample_rate"]
  print(f"jax {jax.__version__} torch {torch.__version__} threads torch={torch.get_num_threads()} "
        f"cpus={os.cpu_count()} config={'small' if args.small else 'official'}")
  print(f"batch {args.batch} x {args.seconds:.1f} s, best of {args.repeats} interleaved rounds")
  best = {}
  for k, ts in times.items():
    wall, cpu = min(t[0] for t in ts), min(t[1] for t in ts)
    best[k] = (wall, cpu)
    print(f"{k:12s}: {audio[k] / rate / wall:7.2f} s audio / s wall ({wall:.3f} s), "
          f"{audio[k] / rate / cpu:7.2f} s audio / CPU-s ({cpu:.3f} CPU-s)")
  print(f"speedup flax / pytorch: {best['pytorch'][0] / best['flax'][0]:.2f}x wall, "
        f"{best['pytorch'][1] / best['flax'][1]:.2f}x CPU time")
  print("(flax varlen: the same clips at their own lengths, <= the batch length, one padded batch)")


if __name__ == "__main__":
  main()
