"""What a tokenization job recorded about its image tokenizer, checked against a training config.

The job (mio_jax/tokenize/job.py) writes OUT/index.json with "image_codes": {"tokenizer",
"codes_per_image", "codebook_size"} next to OUT/shards/. A source whose glob lies in such a folder
(or in the folder itself) must train with config.data.image_tokens = codes_per_image (the image block
length: 256 for a VQGAN f16 at 256 px, 32 for SEED-Tokenizer-2) and config.vocab.image_codes >=
codebook_size. Shards without a record (copied elsewhere, older jobs) are not checked.
"""

from __future__ import annotations

import json
import os

from mio_jax import storage
from mio_jax.config.keys import ConfigError
from mio_jax.data.config import source_shards, under_data_dir

INDEX_FILE = "index.json"


def image_code_record(pattern: str) -> tuple[str, dict] | None:
  """(index.json path, its "image_codes") for a shard glob (absolute or gs://), or None."""
  folder = os.path.dirname(pattern)
  if any(c in folder for c in "*?["):
    return None
  for where in (folder, os.path.dirname(folder)):
    path = storage.as_path(where) / INDEX_FILE
    if where and path.exists():
      record = json.loads(path.read_text(encoding="utf-8")).get("image_codes")
      return (os.fspath(path), record) if record else None
  return None


def check_image_codes(data_cfg, vocab_cfg, patterns: dict[str, str]) -> None:
  """ConfigError (one line naming the key) when a job's record disagrees with the config.
  patterns: config key -> absolute shard glob."""
  for key, pattern in patterns.items():
    found = image_code_record(pattern)
    if found is None:
      continue
    path, rec = found
    what = f"{path} ({key}) records {rec.get('tokenizer')} image codes"
    n = rec.get("codes_per_image")
    if n is not None and n != data_cfg.image_tokens:
      raise ConfigError(f"config.data.image_tokens={data_cfg.image_tokens} but {what}, {n} per image: "
                        f"set config.data.image_tokens={n}")
    book = rec.get("codebook_size")
    if book is not None and book > vocab_cfg.image_codes:
      raise ConfigError(f"config.vocab.image_codes={vocab_cfg.image_codes} is smaller than the {book}-code "
                        f"book: {what}")


def shard_patterns(config) -> dict[str, str]:
  """The shard globs a training config reads (absolute), keyed by the config key naming them."""
  data, out = config.data, {}
  if data.source == "shards" or data.mixed_shards:
    for name in sorted(data.sources):
      if data.sources[name].weight > 0:
        key = "config.data.mixed_shards" if data.mixed_shards else f"config.data.sources.{name}.shards"
        out[key] = under_data_dir(data, source_shards(data, name)[0])
  if config.eval.mixed_shards:
    out["config.eval.mixed_shards"] = under_data_dir(data, config.eval.mixed_shards)
  return out
