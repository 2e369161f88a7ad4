"""SpeechTokenizer encode throughput on CPU: Flax port vs the PyTorch reference, same batch, one run.

  python benchmarks/speech_encode.py [--batch 4] [--seconds 4] [--rounds 5] [--small]

Prints seconds of audio encoded per second of wall time for each side, best and median of
interleaved rounds, and their ratios (benchmarks/protocol.py). The fixed-length batch is speech
tiled to equal length (the PyTorch model has no per-clip lengths). `flax varlen` encodes the same
clips at their own lengths (<= the batch length) as one padded batch (masked path); its rate counts
real audio only, so padding shows as a lower rate. The speech is espeak-ng synthesised where
espeak-ng is installed, else the 100 espeak-ng clips committed in data/mini/speech; the header
says which. Weights are random-init from the released config; throughput does not depend on them.
"""

import argparse
import os
import sys
import tempfile

import numpy as np

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import protocol  # noqa: E402


def speech_clips(n: int, seconds: float, rate: int) -> tuple[list[np.ndarray], str]:
  """n utterances of varied length, each at most `seconds` long, and where they came from.

  The committed clips are short (0.8-2.2 s), so there each utterance is several of them joined,
  up to a length drawn in [seconds / 4, seconds]: the padded batch wastes about what a batch of
  espeak-ng sentences does.
  """
  from tokenizers_port.speechtokenizer import synth
  cap = int(seconds * rate)
  if synth.have_espeak():
    return [c[:cap] for c in synth.corpus(n, seed=1)], "espeak-ng, synthesised now"
  pool = synth.committed_clips(0, 100)
  rng = np.random.default_rng(1)
  clips, k = [], 0
  for _ in range(n):
    want = int(rng.uniform(0.25, 1.0) * cap)
    parts = []
    while sum(p.shape[0] for p in parts) < want:
      parts.append(pool[k % len(pool)])
      k += 1
    clips.append(np.concatenate(parts)[:want])
  return clips, f"committed clips ({os.path.relpath(synth.MINI_SPEECH)}; espeak-ng not installed)"


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=4)
  parser.add_argument("--seconds", type=float, default=4.0)
  parser.add_argument("--rounds", "--repeats", type=int, default=5, dest="rounds")
  parser.add_argument("--small", action="store_true", help="reduced widths (quick smoke run)")
  parser.add_argument("--no-varlen", action="store_true", help="skip the variable-length batch")
  args = parser.parse_args()

  run = protocol.start("SpeechTokenizer encode: Flax port vs PyTorch reference")
  import torch
  from tokenizers_port.speechtokenizer import load, reference
  from tokenizers_port.speechtokenizer.convert import convert

  config = reference.SMALL_CONFIG if args.small else reference.OFFICIAL_CONFIG
  rate = config["sample_rate"]
  model = reference.build_reference(config)
  clips, source = speech_clips(args.batch, args.seconds, rate)
  n = int(args.seconds * rate)
  batch = np.stack([np.resize(c, n) for c in clips]).astype(np.float32)  # tile to equal length
  with tempfile.TemporaryDirectory() as tmp:
    ckpt, cfg_json = reference.save_released_layout(model, config, os.path.join(tmp, "torch"))
    convert(ckpt, cfg_json, os.path.join(tmp, "flax"))
    tok = load(os.path.join(tmp, "flax"), pad_multiple=320)

  x = torch.from_numpy(batch)[:, None]
  sides = {"pytorch": lambda: model.encode(x), "flax": lambda: tok.encode(batch)}
  audio = {"pytorch": batch.size / rate, "flax": batch.size / rate}
  if not args.no_varlen:
    sides["flax varlen"] = lambda: tok.encode(clips)
    audio["flax varlen"] = sum(c.shape[0] for c in clips) / rate
  print(f"speech: {source}; config {'small' if args.small else 'official'}; batch {args.batch} x "
        f"{args.seconds:.1f} s; varlen clips {', '.join(f'{c.shape[0] / rate:.2f}' for c in clips)} s")
  with torch.no_grad():
    times = run.interleaved(sides, args.rounds)
  run.compare(times, baseline="pytorch", work=audio, unit="s audio")
  cpu = {k: min(v) for k, v in run.cpu_seconds.items()}
  print("process CPU seconds per call (best): " + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items()))
  run.finish()


if __name__ == "__main__":
  main()
