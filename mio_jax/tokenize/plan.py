"""The job's plan: which samples make which shard, and which process writes which shard.

Samples are numbered in input order; shard i holds samples [i * shard_size, (i + 1) * shard_size).
Process p of P writes the shards i with i % P == p. The plan depends only on the inputs and the
config, so every process and every rerun computes the same one; plan.json in the output folder
records it, and a rerun whose plan differs (other inputs, shard size or encoders) is refused rather
than mixed into the old shards.
"""

import dataclasses
import hashlib
import json
import math

from mio_jax import storage

PLAN_FILE = "plan.json"
PLAN_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Plan:
  num_samples: int
  shard_size: int
  num_shards: int
  inputs_sha256: str  # over every sample's kind, source and parts (paths, texts)
  settings: dict  # the config that changes shard contents

  def shard_range(self, shard: int) -> range:
    return range(shard * self.shard_size, min(self.num_samples, (shard + 1) * self.shard_size))

  def shard_file(self, shard: int) -> str:
    return f"shard-{shard:05d}-of-{self.num_shards:05d}.array_record"

  def to_dict(self) -> dict:
    return {"version": PLAN_VERSION, **dataclasses.asdict(self)}


def _part_key(part: dict) -> dict:
  return {k: v for k, v in part.items() if k in ("type", "text", "path", "role")}


def inputs_digest(samples) -> str:
  h = hashlib.sha256()
  for s in samples:
    row = {"kind": s.kind, "source": s.source, "error": s.error,
           "parts": [_part_key(p) for p in s.parts]}
    h.update(json.dumps(row, sort_keys=True).encode("utf-8"))
  return h.hexdigest()


def make_plan(samples, shard_size: int, settings: dict) -> Plan:
  if shard_size <= 0:
    raise ValueError(f"config key shard_size must be positive, got {shard_size}")
  n = len(samples)
  return Plan(n, shard_size, max(1, math.ceil(n / shard_size)), inputs_digest(samples), settings)


def owned_shards(num_shards: int, process_index: int, process_count: int) -> list[int]:
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} is not in [0, process_count={process_count})")
  return list(range(process_index, num_shards, process_count))


def check_or_record(plan: Plan, output_dir: str):
  """Write plan.json the first time; afterwards insist the recorded plan is this plan."""
  path = storage.as_path(output_dir) / PLAN_FILE
  mine = json.loads(json.dumps(plan.to_dict()))  # tuples -> lists, as read back from disk
  if path.exists():
    recorded = json.loads(path.read_text(encoding="utf-8"))
    if recorded != mine:
      keys = sorted(k for k in set(recorded) | set(mine) if recorded.get(k) != mine.get(k))
      raise ValueError(f"{path}: output_dir holds a different job (differs in {keys}); "
                       "use a new output_dir or delete the old one")
    return
  storage.atomic_write_text(path, json.dumps(mine, indent=2, sort_keys=True) + "\n")
