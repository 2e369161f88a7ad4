"""Start-up of a kind-filtered shard source: with the kinds index (SHARD.kinds) against without it.

    python benchmarks/pipeline_startup.py [--shards 4,64] [--records 1000,5000] [--rounds 3]

Writes synthetic mixed-kind shards (six kinds in random order; small records: a 4x4 image, 10-40
speech frames, short text) for every shards x records-per-shard pair, then times
`ShardSource(paths, kinds=("text",))` built from the index and, over hard links to the same shards
without index files, from the decode-every-record scan (what every start did before; older shards
still take that path), plus an unfiltered source. The three interleave (benchmarks/protocol.py);
printed: best and median seconds per construction and the scan / index ratio of both.
"""

import argparse
import logging
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The synthetic shard samples are test code (tests/synthetic_shards.py), not part of the package.
sys.path.append(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

import numpy as np  # noqa: E402
from array_record.python import array_record_module  # noqa: E402

from benchmarks import protocol  # noqa: E402
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


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--shards", default="4,64")
  p.add_argument("--records", default="1000,5000", help="records per shard")
  p.add_argument("--rounds", "--repeat", type=int, default=3, dest="rounds")
  args = p.parse_args()
  logging.getLogger("mio_jax.data").setLevel(logging.ERROR)  # the scan's warning, once per run
  run = protocol.start("pipeline start-up: kind-filtered ShardSource, kinds index vs scan")
  rows = []
  for n_shards in map(int, args.shards.split(",")):
    for per_shard in map(int, args.records.split(",")):
      root = tempfile.mkdtemp(prefix="mio_startup_")
      try:
        paths = write_shards(root, n_shards, per_shard)
        bare = os.path.join(root, "no_index")
        os.mkdir(bare)
        bare_paths = [os.path.join(bare, os.path.basename(p)) for p in paths]
        for src, dst in zip(paths, bare_paths):
          os.link(src, dst)  # same bytes, no SHARD.kinds beside them
        n_text = len(ShardSource(paths, kinds=("text",)))
        assert len(ShardSource(bare_paths, kinds=("text",))) == n_text
        print(f"{n_shards} shards x {per_shard} records:")
        times = run.interleaved({"no filter": lambda: ShardSource(paths),
                                 "index": lambda: ShardSource(paths, kinds=("text",)),
                                 "scan": lambda: ShardSource(bare_paths, kinds=("text",))},
                                args.rounds, warmup=False)
        stats = run.compare(times)
        rows.append((n_shards, per_shard, stats))
      finally:
        shutil.rmtree(root)
  print(f"{'shards':>6} {'rec/shard':>9} {'records':>8} {'no filter s':>11} {'index s':>8} "
        f"{'scan s':>8} {'scan/index best':>15} {'median':>7}  (best seconds)")
  for n_shards, per_shard, st in rows:
    print(f"{n_shards:>6} {per_shard:>9} {n_shards * per_shard:>8} {st['no filter'].best:>11.4f} "
          f"{st['index'].best:>8.4f} {st['scan'].best:>8.3f} "
          f"{st['scan'].best / st['index'].best:>14.0f}x {st['scan'].median / st['index'].median:>6.0f}x")
  run.finish()


if __name__ == "__main__":
  main()
