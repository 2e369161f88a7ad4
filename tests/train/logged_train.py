"""launch/train.py, with each process's local batches logged: one line per batch drawn, the SHA-256
of this process's rows, to WORKDIR/batches.<BATCH_LOG_TAG>.process_<i>.jsonl.

The multi-process tests compare these logs between an uninterrupted run and a killed-and-resumed
one: equal sequences mean each host resumed at its own data position, nothing skipped or repeated.
Usage: python tests/train/logged_train.py --config=... --workdir=... [--config.KEY=VALUE ...]
"""

import hashlib
import json
import os
import runpy
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from mio_jax.train import loop  # noqa: E402


class _Logged:

  def __init__(self, batches, path):
    self.batches, self.path = batches, path

  def __iter__(self):
    return self

  def __next__(self):
    batch = next(self.batches)
    digest = hashlib.sha256()
    for key in sorted(batch):
      for shard in sorted(batch[key].addressable_shards, key=lambda s: s.index[0].start or 0):
        digest.update(memoryview(shard.data.__array__()).cast("B"))  # rows this process holds
    with open(self.path, "a") as f:
      f.write(json.dumps(digest.hexdigest()) + "\n")
    return batch

  def __getattr__(self, name):  # get_state, set_state, portable_state, merge_states
    return getattr(self.batches, name)


def _logged_make_batches(real):
  def make(config, batch_sharding):
    import jax
    workdir = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("--workdir="))
    os.makedirs(workdir, exist_ok=True)
    tag = os.environ.get("BATCH_LOG_TAG", "run")
    return _Logged(real(config, batch_sharding),
                   os.path.join(workdir, f"batches.{tag}.process_{jax.process_index()}.jsonl"))
  return make


if __name__ == "__main__":
  loop.make_batches = _logged_make_batches(loop.make_batches)
  sys.argv[0] = os.path.join(ROOT, "launch", "train.py")
  runpy.run_path(sys.argv[0], run_name="__main__")
