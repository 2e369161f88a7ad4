"""Quarantine records, and the quarantine files the job commits.

A quarantined sample is one JSON line: {"source", "kind", "reason", "category", "index", "shard"}.
Each shard's lines go to quarantine/shard-NNNNN.jsonl; the finished job merges them, in shard order,
into quarantine.jsonl. Every file is written atomically (mio_jax.storage.atomic_write_text: a
temporary name renamed into place on local disk, one object upload on gs://), so a reader (or a
rerun) never sees half a file.
"""

import json

from mio_jax import storage

def record(source: str, kind: str, reason: str, category: str, index: int, shard: int) -> dict:
  return {"source": source, "kind": kind, "reason": reason, "category": category, "index": index,
          "shard": shard}


def atomic_write_jsonl(path, rows: list[dict]):
  storage.atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows))


def read_jsonl(path) -> list[dict]:
  text = storage.as_path(path).read_text(encoding="utf-8")
  return [json.loads(line) for line in text.splitlines() if line.strip()]
