"""Start-up of a kind-filtered shard source: with the kinds index (SHARD.kinds) against without it.

    python benchmarks/pipeline_startup.py [--shards 4,64] [--records 1000,10000] [--repeat 3]

Writes synthetic mixed-kind shards (six kinds in random order; small records: a 4x4 image, 10-40
speech frames, short text) for every shards x records-per-shard pair, then times
`ShardSource(paths, kinds=("text",))` built from the index and, with the index files removed, from
the decode-every-record scan (what every start did before; older shards still take that path).
Prints seconds per construction (best of --repeat for the index, one run of the scan) and the ratio.
"""

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The synthetic shard samples are test code (tests/synthetic_shards.py), not part of the package.
sys.path.append(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

import numpy as np  # noqa: E402
from array_record.python import array_record_module  # noqa: E402

from mio_jax.data import kinds_index, shards  # noqa: E402
import synthetic_shards as synthetic  # noqa: E402
from mio_jax.data.pipeline import ShardSource  # noqa: E402


def write_shards(root: str, n_shards: int, per_shard: int, seed: int = 0) -> list[str]:
  rng = np.random.default_rng(seed)
  # 64 encoded samples per kind, reused: writing stays fast, decoding costs what real records do.
  pool = {k: [shards.encode_sample(synthetic.make_sample(k, rng, uid=i)) for i in range(64)]
          for k in shards.KINDS}
  paths = []
  for f in range(n_shards):
    kinds = [shards.KINDS[int(k)] for k in rng.integers(0, len(shards.KINDS), per_shard)]
    path = os.path.join(root, f"shard-{f:05d}-of-{n_shards:05d}.array_record")
    writer = array_record_module.ArrayRecordWriter(path, shards.WRITER_OPTIONS)
    for i, kind in enumerate(kinds):
      writer.write(pool[kind][i % 64])
    writer.close()
    kinds_index.write(path, kinds)
    paths.append(path)
  return paths


def best_time(fn, repeat: int) -> float:
  times = []
  for _ in range(repeat):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return min(times)


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--shards", default="4,64")
  p.add_argument("--records", default="1000,10000", help="records per shard")
  p.add_argument("--repeat", type=int, default=3)
  args = p.parse_args()
  logging.getLogger("mio_jax.data").setLevel(logging.ERROR)  # the scan's warning, once per run
  cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
              if line.startswith("model name")), "unknown CPU")
  print(f"{cpu}, {os.cpu_count()} cores; load average at start {os.getloadavg()[0]:.2f}")
  print(f"{'shards':>6} {'rec/shard':>9} {'records':>8} {'no filter s':>11} {'index s':>8} "
        f"{'scan s':>8} {'scan/index':>10}")
  for n_shards in map(int, args.shards.split(",")):
    for per_shard in map(int, args.records.split(",")):
      root = tempfile.mkdtemp(prefix="mio_startup_")
      try:
        paths = write_shards(root, n_shards, per_shard)
        plain = best_time(lambda: ShardSource(paths), args.repeat)
        indexed = best_time(lambda: ShardSource(paths, kinds=("text",)), args.repeat)
        n_text = len(ShardSource(paths, kinds=("text",)))
        for path in paths:
          os.remove(kinds_index.sidecar(path))
        start = time.perf_counter()
        scanned = ShardSource(paths, kinds=("text",))
        scan = time.perf_counter() - start
        assert len(scanned) == n_text
        print(f"{n_shards:>6} {per_shard:>9} {n_shards * per_shard:>8} {plain:>11.4f} "
              f"{indexed:>8.4f} {scan:>8.3f} {scan / indexed:>9.0f}x", flush=True)
      finally:
        shutil.rmtree(root)
  print(f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
  main()
