"""Codebook k-means throughput: points/s per device of the nearest-centroid assignment at d = 1152,
and the projection to UniCode2's scale (K = 500,000, millions of points).

  python benchmarks/kmeans_throughput.py [--ks 16384,65536] [--batch 2048] [--rounds 3] [--smoke]

Per K, three sides in interleaved rounds (benchmarks/protocol.py), on the same points and
centroids, float32, matmul precision "highest":
  blocked   mio_jax.codebook's search (kmeans.make_assign): a scan over centroid blocks of --block
            rows, never the [B, K] matrix
  full      the reference: argmin over the whole [B, K] score matrix, one XLA matmul (what the
            blocking must not lose to)
  step      a whole mini-batch step (kmeans.make_step): assignment, per-centroid sums, update,
            re-seeding
Work per call: B points, 2 B K d flops for the scores. The projection divides the best blocked rate
(flops/s at the largest K) by 2 x 500,000 x 1152 flops per point; accelerator lines are assumptions
(peak x utilisation / bf16 passes per float32 matmul), printed as such.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import protocol  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402

from mio_jax.codebook import kmeans  # noqa: E402
from mio_jax.codebook.search import Layout  # noqa: E402
from mio_jax.parallel.mesh import make_mesh  # noqa: E402

PAPER_K, PAPER_D = 500_000, 1152
# bf16 passes per float32 matmul on a TPU MXU by jax precision (HIGHEST: 6, HIGH: 3, DEFAULT: 1).
TPU_PASSES = {"highest": 6, "high": 3, "default": 1}


def flops_per_point(k: int, d: int) -> float:
  return 2.0 * k * d


def projection_lines(flops_per_s: float, devices_at_scale: int = 64, points=(10_000_000, 100_000_000),
                     tpu_peak_tflops: float = 459.0, utilisation: float = 0.5) -> list[str]:
  """What a measured rate (flops/s per device) means at K = 500K: points/s per device and hours per
  pass; then the same under the stated TPU v5p assumptions."""
  per_point = flops_per_point(PAPER_K, PAPER_D)
  rate = flops_per_s / per_point
  lines = [f"K={PAPER_K:,} d={PAPER_D}: {per_point / 1e9:.3f} GFLOP per point; this machine: "
           f"{rate:,.1f} points/s per device"]
  for n in points:
    lines.append(f"  one pass over {n:,} points: {n / rate / 3600:,.1f} device-hours "
                 f"({n / rate / 3600 / devices_at_scale:,.2f} h on {devices_at_scale} such devices)")
  for precision, passes in TPU_PASSES.items():
    r = tpu_peak_tflops * 1e12 * utilisation / passes / per_point
    lines.append(f"  assumed TPU v5p ({tpu_peak_tflops:g} bf16 TFLOP/s x {utilisation:g} utilisation / "
                 f"{passes} passes, precision {precision}): {r:,.0f} points/s per chip; "
                 f"{points[-1]:,} points: {points[-1] / r / devices_at_scale / 60:,.1f} min per pass "
                 f"on {devices_at_scale} chips")
  return lines


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--ks", default="16384,65536")
  p.add_argument("--dim", type=int, default=PAPER_D)
  p.add_argument("--batch", type=int, default=2048)
  p.add_argument("--block", type=int, default=4096)
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--devices", type=int, default=0, help="devices of the mesh (0: all local ones)")
  p.add_argument("--smoke", action="store_true", help="tiny shapes: proves the script runs")
  a = p.parse_args(argv)
  if a.smoke:
    a.ks, a.dim, a.batch, a.block, a.rounds = "512,1024", 64, 256, 256, 2
  ks = [int(k) for k in a.ks.split(",")]
  devices = jax.devices()[:a.devices] if a.devices else jax.devices()
  run = protocol.start("codebook k-means: nearest-centroid assignment throughput")
  mesh = make_mesh(ml_collections.ConfigDict(dict(ici=dict(data=1, fsdp=-1, tensor=1),
                                                  dcn=dict(data=1, fsdp=1, tensor=1), processes_per_node=0)),
                   devices)
  print(f"backend {jax.default_backend()}, {mesh.size} device(s) ({devices[0].device_kind}); "
        f"batch {a.batch}, d {a.dim}, block {a.block}, float32, precision highest", flush=True)
  rng = np.random.default_rng(0)
  x = rng.standard_normal((a.batch, a.dim)).astype(np.float32)
  points = jax.device_put(x, NamedSharding(mesh, kmeans.POINTS_SPEC))
  weights = jax.device_put(np.ones(a.batch, np.float32), NamedSharding(mesh, kmeans.WEIGHTS_SPEC))
  results = {}
  for k in ks:
    c = rng.standard_normal((k, a.dim)).astype(np.float32)
    layout = Layout.of(k, mesh.size, a.block)
    table = kmeans.place_centroids(mesh, layout, c)
    assign = kmeans.make_assign(mesh, layout)
    full = jax.jit(lambda x, c: jnp.argmin(jnp.sum(c * c, 1)[None] - 2 * jnp.dot(
        x, c.T, precision=jax.lax.Precision.HIGHEST), axis=1))
    c_dev = jnp.asarray(c)
    options = kmeans.Options(update="minibatch", reseed="farthest", reseed_pool=256, utilisation="none",
                             usage_decay=0.99, min_usage=0.05, steps_per_pass=1000)
    step = kmeans.make_step(mesh, layout, options)
    holder = {"state": kmeans.new_state(mesh, layout, jnp.asarray(c), options)}

    def do_step():
      holder["state"], m = step(holder["state"], points, weights)
      return m

    ids = np.asarray(assign(table, points)[0])
    agree = float(np.mean(ids == np.asarray(full(x, c_dev))))
    print(f"K={k}: layout {layout.blocks} blocks of {layout.block} per device; blocked vs full ids agree "
          f"on {agree:.2%} of points (float32 near-ties aside)", flush=True)
    sides = {f"full K={k}": lambda: full(x, c_dev), f"blocked K={k}": lambda: assign(table, points)[0],
             f"step K={k}": do_step}
    times = run.interleaved(sides, rounds=a.rounds)
    work = {name: a.batch / mesh.size for name in sides}
    stats = run.compare(times, baseline=f"full K={k}", work=work, unit="points/device")
    for name, s in stats.items():
      print(f"{name:>16}: {flops_per_point(k, a.dim) * a.batch / mesh.size / s.best / 1e9:,.1f} "
            f"GFLOP/s per device (best)")
    results[k] = stats
  best = results[ks[-1]][f"blocked K={ks[-1]}"]
  rate = flops_per_point(ks[-1], a.dim) * a.batch / mesh.size / best.best
  print("projection (from the blocked search at the largest K; linear in K):")
  for line in projection_lines(rate):
    print(line)
  contended = run.finish()
  return dict(stats=results, flops_per_s=rate, contended=contended)


if __name__ == "__main__":
  main()
