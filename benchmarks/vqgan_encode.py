"""Images/s of the Flax VQGAN encode (uint8 images -> codes) against the PyTorch reference encode
on the same batch, in one run, on CPU, float32 on both sides.

  python benchmarks/vqgan_encode.py [--flavor taming|llamagen] [--batch 2] [--rounds 3]

Both sides run the official f16 config (random init; throughput does not depend on the weights)
and the whole encode path: uint8 -> [-1, 1] float, encoder, quant_conv, nearest code. Rounds
interleave the sides (benchmarks/protocol.py): best and median per side, ratios of both.
Also printed: nominal GFLOP/s, i.e. the direct-convolution encode's FLOPs per image (XLA cost
analysis, ~139 GFLOP for the taming f16 encoder at 256 px) over each side's time per image;
Winograd sides do fewer multiplies, so theirs can exceed the machine's matmul peak.
"""

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import protocol  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from tokenizers_port.vqgan import convert, load  # noqa: E402
from tokenizers_port.vqgan import reference as ref  # noqa: E402

OFFICIAL = {"taming": ref.TAMING_OFFICIAL, "llamagen": ref.LLAMAGEN_OFFICIAL}


def _nominal_flops(tok, images):
  """FLOPs per image of the direct-conv encode, from XLA's cost analysis."""
  cost = tok._encode.lower(tok._state, images[:1]).compile().cost_analysis()
  return (cost[0] if isinstance(cost, list) else cost)["flops"]


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--flavor", default="taming", choices=sorted(OFFICIAL))
  p.add_argument("--batch", type=int, default=2)
  p.add_argument("--size", type=int, default=256)
  p.add_argument("--rounds", "--repeats", type=int, default=3, dest="rounds")
  p.add_argument("--conv-impl", default="winograd,direct",
                 help="comma-separated Flax 3x3 conv implementations to measure")
  a = p.parse_args()
  run = protocol.start("VQGAN encode: Flax port vs PyTorch reference")

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

  sides = {"torch": torch_encode} | {impl: (lambda tok=tok: tok.encode(images)) for impl, tok in toks.items()}
  print(f"VQGAN encode, {a.flavor} official config, batch {a.batch} x {a.size}px, float32; "
        f"nominal {flops / 1e9:.0f} GFLOP per image (direct-conv encode, XLA cost analysis)")
  times = run.interleaved(sides, a.rounds, warmup=False)  # all warmed up above
  stats = run.compare(times, baseline="torch", work={k: float(a.batch) for k in sides}, unit="images")
  for name, s in stats.items():
    print(f"  {name:>8}: {a.batch / s.median * flops / 1e9:5.0f} nominal GFLOP/s (median)")
  run.finish()


if __name__ == "__main__":
  main()
