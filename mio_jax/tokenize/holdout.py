"""Hold samples out of training: split a JSONL manifest into a training and a held-out manifest.

    train, heldout = split_manifest("data/mini/image_text.jsonl", "out/manifests", every=8)

Every `every`-th row (rows every-1, 2*every-1, ...) goes to the held-out file, the rest to the
training file, both written under `out_dir/{train,heldout}/` with the source's file name. Rows whose
media another manifest also uses (`used_elsewhere`, from `media_paths`) always stay in training, so a
held-out sample's media is never seen in training. Media paths are made absolute, since the new
files live in another folder than the media they name.
"""

from __future__ import annotations

import json
import os

_PATH_KEYS = ("image", "audio", "video")


def _absolute(row: dict, base: str) -> dict:
  row = dict(row)
  for key in _PATH_KEYS:
    if isinstance(row.get(key), str):
      row[key] = os.path.join(base, row[key])
  if isinstance(row.get("parts"), list):
    row["parts"] = [_absolute(p, base) if isinstance(p, dict) else p for p in row["parts"]]
  if isinstance(row.get("path"), str):
    row["path"] = os.path.join(base, row["path"])
  if isinstance(row.get("messages"), list):
    row["messages"] = [dict(m, content=[_absolute(p, base) if isinstance(p, dict) else p
                                        for p in m["content"]])
                       if isinstance(m, dict) and isinstance(m.get("content"), list) else m
                       for m in row["messages"]]
  return row


def _paths(value) -> set[str]:
  if isinstance(value, dict):
    return {v for k, v in value.items() if k in _PATH_KEYS + ("path",) and isinstance(v, str)} | \
        set().union(*(_paths(v) for k, v in value.items() if isinstance(v, (dict, list))))
  if isinstance(value, list):
    return set().union(*(_paths(v) for v in value))
  return set()


def media_paths(manifests: list[str]) -> set[str]:
  """Absolute paths of every media file the manifests' readable rows name."""
  found = set()
  for path in manifests:
    with open(path, encoding="utf-8") as f:
      for line in f:
        try:
          found |= _paths(_absolute(json.loads(line), os.path.dirname(os.path.abspath(path))))
        except json.JSONDecodeError:
          continue
  return found


def split_manifest(path: str, out_dir: str, every: int,
                   used_elsewhere: frozenset[str] = frozenset()) -> tuple[str, str]:
  """-> (training manifest, held-out manifest) paths."""
  if every < 2:
    raise ValueError(f"split_manifest: every={every} would hold out every row of {path}")
  base = os.path.dirname(os.path.abspath(path))
  name = os.path.basename(path)
  out = {split: os.path.join(out_dir, split, name) for split in ("train", "heldout")}
  for file in out.values():
    os.makedirs(os.path.dirname(file), exist_ok=True)
  with open(path, encoding="utf-8") as src, open(out["train"], "w", encoding="utf-8") as train, \
       open(out["heldout"], "w", encoding="utf-8") as heldout:
    eligible = 0
    for line in (line for line in src if line.strip()):
      try:
        row = _absolute(json.loads(line), base)
      except json.JSONDecodeError:
        train.write(line.rstrip("\n") + "\n")  # kept as it is: the job quarantines it with its reason
        continue
      hold = not _paths(row) & used_elsewhere
      eligible += hold
      (heldout if hold and eligible % every == 0 else train).write(json.dumps(row) + "\n")
  return out["train"], out["heldout"]
