"""The points a UniCode2 codebook is fit on: the images of tokenization inputs -> SigLIP's
post-layernorm patch sequence -> .npy files [rows, d] that the k-means reader streams
(mio_jax/codebook/reader.py).

The inputs and the pixels are the tokenization job's with a UniCode2 tokenizer: the same input
specs (manifests, folders, TFDS; `manifests.read_inputs`), MIO's image filter (min side, aspect
ratio) and SigLIP's squash-bicubic resize (`media.load_image`), so the codebook is fit on what it will
later tokenize. Every image part counts: image-text pairs, images of interleaved documents and
conversations; video frames are left out (a video's frames are near-duplicates of each other). An
image that cannot be used lands in quarantine.jsonl with its reason and the job goes on.

One image of So400m/14-384 is 729 patches x 1152 floats (3.4 MB), so `patches_per_image` keeps a
seeded random subset of each image's patches (0: all of them): a codebook of K = 500,000 wants
millions of points from many images more than every patch of a few.

Several hosts: `shard=(i, n)` takes images i, i + n, ... and names its files after i, so hosts write
disjoint files into one folder.
"""

from __future__ import annotations

import dataclasses
import io
import json

import numpy as np

from mio_jax import storage
from mio_jax.tokenize import manifests, media, quarantine

# What the tokenization job does with a SigLIP-based tokenizer's images (mio_jax/codebook/tokenizer.py).
SIGLIP_RESIZE = "squash_bicubic"


@dataclasses.dataclass(frozen=True)
class EmbedOptions:
  batch_size: int = 8
  patches_per_image: int = 64  # 0: every patch
  rows_per_file: int = 65536
  seed: int = 0
  dtype: str = "float32"  # or "float16": half the disk; the k-means reads either as float32
  shard: tuple[int, int] = (0, 1)  # (this host's index, number of hosts)


def image_parts(samples: list[manifests.RawSample]):
  """(source, image part) for every image of every sample, in input order; a sample the reader could
  not understand gives (source, None, its error)."""
  for raw in samples:
    if raw.fetch is not None:
      raw = raw.fetch()
    if raw.error:
      yield raw.source, None, raw.error
      continue
    for part in raw.parts:  # flat for every kind: a conversation's turns are parts with a role
      if part.get("type") == "image":
        yield raw.source, part, None


def patch_subset(index: int, num_patches: int, keep: int, seed: int) -> np.ndarray:
  """Which patches of image `index` are kept: a seeded sample without replacement, in order."""
  if keep <= 0 or keep >= num_patches:
    return np.arange(num_patches)
  return np.sort(np.random.default_rng([seed, index]).choice(num_patches, keep, replace=False))


class _FileWriter:
  """Rows accumulate until rows_per_file, then one .npy is written atomically."""

  def __init__(self, out: str, prefix: str, rows_per_file: int, dtype: str):
    self.out, self.prefix, self.rows_per_file, self.dtype = out, prefix, rows_per_file, dtype
    self.pending: list[np.ndarray] = []
    self.pending_rows = 0
    self.files: list[dict] = []

  def add(self, rows: np.ndarray):
    self.pending.append(rows.astype(self.dtype))
    self.pending_rows += len(rows)
    while self.pending_rows >= self.rows_per_file:
      self._write(self.rows_per_file)

  def _write(self, n: int):
    rows = np.concatenate(self.pending)
    self.pending, self.pending_rows = [rows[n:]], len(rows) - n
    name = f"{self.prefix}-{len(self.files):05d}.npy"
    buf = io.BytesIO()
    np.save(buf, rows[:n])
    storage.atomic_write_bytes(storage.as_path(self.out) / name, buf.getvalue())
    self.files.append({"file": name, "rows": n})

  def finish(self) -> list[dict]:
    if self.pending_rows:
      self._write(self.pending_rows)
    return self.files


def embed_patches(encoder, inputs: str, out: str, options: EmbedOptions = EmbedOptions(),
                  tfds_data_dir: str | None = None) -> dict:
  """Embeds the images of `inputs` (a tokenization input spec) with `encoder` (a
  tokenizers_port.siglip encoder: image_size, num_patches, width, encode_patches) into OUT/*.npy;
  writes OUT/quarantine-*.jsonl and OUT/index-*.json (per host) and returns the index."""
  index, count = options.shard
  if not 0 <= index < count:
    raise ValueError(f"shard {index}/{count}: the index must be in [0, {count})")
  cfg = media.MediaConfig(image_size=encoder.image_size, image_resize=SIGLIP_RESIZE)
  storage.as_path(out).mkdir(parents=True, exist_ok=True)
  prefix = f"embeddings-{index:05d}-of-{count:05d}"
  writer = _FileWriter(out, prefix, options.rows_per_file, options.dtype)
  bad, images, ids = [], [], []
  seen = 0

  def flush():
    if not images:
      return
    patches = np.asarray(encoder.encode_patches(np.stack(images)))
    for row, i in zip(patches, ids):
      writer.add(row[patch_subset(i, encoder.num_patches, options.patches_per_image, options.seed)])
    images.clear()
    ids.clear()

  for n, (source, part, error) in enumerate(image_parts(manifests.read_inputs(inputs, tfds_data_dir))):
    if n % count != index:
      continue
    seen += 1
    if error is not None:
      bad.append(quarantine.record(source, "image", error, "bad row", n, index))
      continue
    try:
      images.append(media.load_image(media.fetch_remote(part), cfg))
      ids.append(n)
    except media.MediaError as e:
      bad.append(quarantine.record(source, "image", str(e), e.category, n, index))
    if len(images) == options.batch_size:
      flush()
  flush()
  files = writer.finish()
  summary = {"read": seen, "embedded": seen - len(bad), "quarantined": len(bad),
             "rows": sum(f["rows"] for f in files), "dim": encoder.width,
             "patches_per_image": options.patches_per_image, "num_patches": encoder.num_patches,
             "image_size": encoder.image_size, "image_resize": SIGLIP_RESIZE, "seed": options.seed,
             "dtype": options.dtype, "shard": [index, count], "files": files}
  quarantine.atomic_write_jsonl(storage.as_path(out) / f"quarantine-{index:05d}-of-{count:05d}.jsonl", bad)
  storage.atomic_write_text(storage.as_path(out) / f"index-{index:05d}-of-{count:05d}.json",
                            json.dumps(summary, indent=1))
  return summary
