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

from mio_jax.tokenize.manifests import read_jsonl

# Keys whose string value names a media file, at any depth of a row (manifests.py's row layouts).
_PATH_KEYS = ("image", "audio", "video", "path")


def _absolute(value, base: str, found: set[str]):
  """`value` with every media path joined to `base`; the joined paths are added to `found`."""
  if isinstance(value, dict):
    out = {}
    for key, v in value.items():
      if key in _PATH_KEYS and isinstance(v, str):
        out[key] = os.path.join(base, v)
        found.add(out[key])
      else:
        out[key] = _absolute(v, base, found)
    return out
  if isinstance(value, list):
    return [_absolute(v, base, found) for v in value]
  return value


def media_paths(manifests: list[str]) -> set[str]:
  """Absolute paths of every media file the manifests' readable rows name (read as the job reads them)."""
  return {part["path"] for path in manifests for sample in read_jsonl(path) for part in sample.parts
          if "path" in part}


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
      media = set()
      try:
        row = _absolute(json.loads(line), base, media)
      except json.JSONDecodeError:
        train.write(line.rstrip("\n") + "\n")  # kept as it is: the job quarantines it with its reason
        continue
      hold = not media & used_elsewhere
      eligible += hold
      (heldout if hold and eligible % every == 0 else train).write(json.dumps(row) + "\n")
  return out["train"], out["heldout"]


def split_corpus(sources: dict[str, str], out_dir: str,
                 every: dict[str, int]) -> tuple[dict[str, str], dict[str, str]]:
  """-> (training manifest per kind, held-out manifest per kind of `every`). The kinds of `every` are
  split (`split_manifest`, every[kind]-th row held out), in `every`'s order; every other manifest of
  `sources` trains whole, and its media stay out of the held-out files. launch/demo.py's split."""
  others = {kind: path for kind, path in sources.items() if kind not in every}
  used = frozenset(media_paths(list(others.values())))
  train, heldout = dict(others), {}
  for kind, n in every.items():
    train[kind], heldout[kind] = split_manifest(sources[kind], out_dir, n, used)
  return train, heldout
