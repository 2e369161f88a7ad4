"""Quarantine records and the atomic file writes the job commits with.

A quarantined sample is one JSON line: {"source", "kind", "reason", "category", "index", "shard"}.
Each shard's lines go to quarantine/shard-NNNNN.jsonl; the finished job merges them, in shard order,
into quarantine.jsonl. Every file is written under a temporary name and renamed into place, so a
reader (or a rerun) never sees half a file.
"""

import json
import os
import tempfile


def record(source: str, kind: str, reason: str, category: str, index: int, shard: int) -> dict:
  return {"source": source, "kind": kind, "reason": reason, "category": category, "index": index,
          "shard": shard}


def temp_path(path: str) -> str:
  """A unique temporary name beside `path` (same filesystem, so os.replace is atomic)."""
  fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                             dir=os.path.dirname(path) or ".")
  os.close(fd)
  return tmp


def commit(tmp: str, path: str):
  """fsync the finished temporary file, then rename it over `path`."""
  with open(tmp, "rb") as f:
    os.fsync(f.fileno())
  os.replace(tmp, path)


def atomic_write_text(path: str, text: str):
  tmp = temp_path(path)
  with open(tmp, "w", encoding="utf-8") as f:
    f.write(text)
  commit(tmp, path)


def atomic_write_jsonl(path: str, rows: list[dict]):
  atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows))


def read_jsonl(path: str) -> list[dict]:
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]
