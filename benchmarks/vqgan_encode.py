"""Images/s of the Flax VQGAN encode (uint8 images -> codes) against the PyTorch reference encode
on the same batch, in one run, on CPU, float32 on both sides.

  python benchmarks/vqgan_encode.py [--flavor taming|llamagen] [--batch 4] [--repeats 3]

Both sides run the official f16 config (random init; throughput does not depend on the weights)
and the whole encode path: uint8 -> [-1, 1] float, encoder, quant_conv, nearest code. Rounds
alternate between the two so machine load hits both alike; the median round is reported.
Also printed: nominal GFLOP/s, i.e. the direct-convolution encode's FLOPs per image (XLA cost
analysis, ~139 GFLOP for the taming f16 encoder at 256 px) over each side's time per image;
Winograd sides do fewer multiplies, so theirs can exceed the machine's matmul peak.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from tokenizers_port.vqgan import convert, load  # noqa: E402
from tokenizers_port.vqgan import reference as ref  # noqa: E402

OFFICIAL = {"taming": ref.TAMING_OFFICIAL, "llamagen": ref.LLAMAGEN_OFFICIAL}


def _time(fn, repeats):
  out = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    out.append(time.perf_counter() - t)
  return out


def _nominal_flops(tok, images):
  """FLOPs per image of the direct-conv encode, from XLA's cost analysis."""
  cost = tok._encode.lower(tok._state, images[:1]).compile().cost_analysis()
  return (cost[0] if isinstance(cost, list) else cost)["flops"]


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--flavor", default="taming", choices=sorted(OFFICIAL))
  p.add_argument("--batch", type=int, default=4)
  p.add_argument("--size", type=int, default=256)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--conv-impl", default="winograd,direct",
                 help="comma-separated Flax 3x3 conv implementations to measure")
  a = p.parse_args()

  images = ref.photographs(a.size)[:a.batch]
  if len(images) < a.batch:
    images = np.resize(images, (a.batch,) + images.shape[1:])
  model = ref.build(a.flavor, OFFICIAL[a.flavor])
  tmp = tempfile.mkdtemp()
  ref.save_released_layout(model, a.flavor, os.path.join(tmp, "ckpt"))
  convert.convert(os.path.join(tmp, "ckpt"), a.flavor, os.path.join(tmp, "flax"),
                  image_size=a.size)

  def torch_encode():
    with torch.inference_mode():
      return ref.codes(model, ref.to_nchw(images))

  toks = {}
  for impl in a.conv_impl.split(","):
    toks[impl] = load(os.path.join(tmp, "flax"), conv_impl=impl)
    t = time.perf_counter()
    jax.block_until_ready(toks[impl].encode(images))
    print(f"flax[{impl}] compile + first call: {time.perf_counter() - t:.1f} s")
  torch_encode()
  flops = _nominal_flops(toks.get("direct") or load(os.path.join(tmp, "flax"), conv_impl="direct"),
                         images)

  times = {"torch": []} | {impl: [] for impl in toks}
  for _ in range(a.repeats):  # Alternate so load changes hit every side.
    times["torch"] += _time(torch_encode, 1)
    for impl, tok in toks.items():
      times[impl] += _time(lambda: tok.encode(images), 1)

  ips = {k: a.batch / statistics.median(v) for k, v in times.items()}
  print(f"VQGAN encode, {a.flavor} official config, batch {a.batch} x {a.size}px, float32, "
        f"{os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"jax {jax.__version__}")
  gf = flops / 1e9
  print(f"  torch            {ips['torch']:7.3f} images/s  "
        f"({ips['torch'] * gf:5.0f} nominal GFLOP/s)")
  for impl in toks:
    print(f"  flax[{impl:8s}] {ips[impl]:7.3f} images/s  ({ips[impl] * gf:5.0f} nominal GFLOP/s)"
          f"  = {ips[impl] / ips['torch']:.2f}x torch")


if __name__ == "__main__":
  main()
