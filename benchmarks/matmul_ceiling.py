"""The float32 matmul ceiling under the SEED-2 encode ratio: ViT-g/14's four matmul shapes (qkv,
attention output, MLP in, MLP out) at the encode benchmark's batch, timed alone in PyTorch and XLA.

    python benchmarks/matmul_ceiling.py [--images 2] [--rounds 5] [--threads 1]

SEED's encode is ~97% these matmuls (39 blocks of width 1408 and MLP 6144 over 257 tokens per
image; the Q-Former and the code search are the rest). If both frameworks already run them near the
core's float32 peak, no exact (same precision) port can be much faster than the reference: the
printed bound is the ratio the ViT's matmuls alone would allow, PyTorch's time over XLA's.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import protocol  # noqa: E402

WIDTH, MLP, TOKENS, BLOCKS = 1408, 6144, 257, 39  # EVA-CLIP ViT-g/14 at 224 px, as BLIP-2 cuts it
SHAPES = {"qkv": (WIDTH, 3 * WIDTH), "attention out": (WIDTH, WIDTH), "mlp in": (WIDTH, MLP),
          "mlp out": (MLP, WIDTH)}


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--images", type=int, default=2, help="the encode's batch: rows = images x 257")
  p.add_argument("--rounds", type=int, default=5)
  p.add_argument("--threads", type=int, default=1, help="cores for both sides (0: all)")
  a = p.parse_args(argv)
  import torch
  if a.threads:  # before jax's backend starts: it sizes its pool by the affinity
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:a.threads])
    torch.set_num_threads(a.threads)
  import jax
  import jax.numpy as jnp

  run = protocol.start("float32 matmul ceiling at ViT-g/14's shapes: PyTorch vs XLA")
  rows = a.images * TOKENS
  rng = np.random.default_rng(0)
  total = {"torch": 0.0, "xla": 0.0}
  flop_total = 0.0
  for name, (k, n) in SHAPES.items():
    x = rng.standard_normal((rows, k), dtype=np.float32)
    w = (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)
    tx, tw = torch.from_numpy(x), torch.from_numpy(w)
    jx, jw = jnp.asarray(x), jnp.asarray(w)
    dot = jax.jit(jnp.dot)
    sides = {"torch": lambda: torch.mm(tx, tw), "xla": lambda: dot(jx, jw)}
    np.testing.assert_allclose(np.asarray(sides["xla"]()), sides["torch"]().numpy(), rtol=2e-3, atol=2e-3)
    flop = 2.0 * rows * k * n
    print(f"-- {name}: [{rows}, {k}] x [{k}, {n}], {flop / 1e9:.2f} GFLOP")
    times = run.interleaved(sides, a.rounds, quiet=True)
    stats = run.compare(times, baseline="torch", work={s: flop / 1e9 for s in sides}, unit="GFLOP")
    for side in total:
      total[side] += stats[side].best * BLOCKS
    flop_total += flop * BLOCKS
  print(f"ViT-g matmuls per batch of {a.images} ({flop_total / 1e12:.2f} TFLOP), from the best rounds: "
        f"torch {total['torch']:.2f} s ({flop_total / total['torch'] / 1e9:.0f} GFLOP/s), xla "
        f"{total['xla']:.2f} s ({flop_total / total['xla'] / 1e9:.0f} GFLOP/s); the ratio these "
        f"matmuls allow an exact port: {total['torch'] / total['xla']:.2f}x")
  contended = run.finish()
  return {"torch_seconds": total["torch"], "xla_seconds": total["xla"], "contended": contended}


if __name__ == "__main__":
  main()
