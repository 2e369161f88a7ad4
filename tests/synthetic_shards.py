"""Synthetic shard samples (random codes, a small sentence corpus) for tests and the benchmarks.

Real shards come from the tokenization jobs; these have the same schema and realistic shapes
(image grids, 8-layer speech codes at 50 frames/s, 4-8 video frames) so the pipeline can be
exercised without running the tokenizers. Test code, kept out of the package: tests import it by
name (pytest puts tests/ on sys.path); the benchmarks put tests/ on their path first.
"""

from __future__ import annotations

import os

import numpy as np

from mio_jax.data.shards import Sample, ShardWriter

_WORDS = ("a red square on a blue background the circle moves left right small large green "
          "yellow triangle above below two plus makes four count to six picture shows black "
          "white purple diamond scene cuts to number before is orange sides corners").split()


def sentence(rng: np.random.Generator, lo: int = 4, hi: int = 14) -> str:
  return " ".join(rng.choice(_WORDS, size=int(rng.integers(lo, hi))))


def corpus_lines(n: int = 400, seed: int = 0) -> list[str]:
  rng = np.random.default_rng(seed)
  return [sentence(rng) for _ in range(n)]


def make_sample(kind: str, rng: np.random.Generator, *, uid: int, grid: int = 4,
                image_codes: int = 8192, speech_frames: tuple[int, int] = (10, 40),
                source: str = "synthetic") -> Sample:
  """One sample of `kind`; meta["id"] = uid so tests can follow it through the pipeline."""
  text = lambda **kw: {"type": "text", "text": sentence(rng), **kw}
  image = lambda **kw: {"type": "image", "codes": rng.integers(0, image_codes, (grid, grid),
                                                              dtype=np.int32), **kw}
  speech = lambda **kw: {"type": "speech", "codes": rng.integers(
      0, 1024, (8, int(rng.integers(*speech_frames))), dtype=np.int32), **kw}
  if kind == "image_text":
    parts = [image(), text()]
  elif kind == "speech_text":
    parts = [speech(), text()]
  elif kind == "video_text":
    frames = int(rng.integers(4, 9))
    parts = [{"type": "video", "codes": rng.integers(0, image_codes, (frames, grid, grid),
                                                     dtype=np.int32)}, text()]
  elif kind == "interleaved":
    parts = [text(), image(), text(), image(), text()]
  elif kind == "text":
    parts = [text()]
  elif kind == "conversation":
    parts = [text(role="user"), image(role="user"), text(role="assistant"), text(role="user"),
             speech(role="assistant")]
  else:
    raise ValueError(f"unknown kind {kind!r}")
  return Sample(kind=kind, parts=parts, source=source, meta={"id": uid})


def write_shards(directory: str, kind: str, *, num_samples: int, num_shards: int = 2,
                 seed: int = 0, first_id: int = 0, **sample_kw) -> list[str]:
  """Writes `num_samples` samples of `kind` round-robin into shards; returns their paths."""
  os.makedirs(directory, exist_ok=True)
  rng = np.random.default_rng(seed)
  paths = [os.path.join(directory, f"{kind}-{i:05d}-of-{num_shards:05d}.array_record")
           for i in range(num_shards)]
  per_shard = [[] for _ in paths]
  for i in range(num_samples):
    per_shard[i % num_shards].append(make_sample(kind, rng, uid=first_id + i, **sample_kw))
  for path, samples in zip(paths, per_shard):
    with ShardWriter(path) as w:
      for s in samples:
        w.write(s)
  return paths


def tiny_text_model(directory: str, vocab_size: int = 400) -> str:
  """Trains a small SentencePiece model on the synthetic sentences (well under a second)."""
  from mio_jax.vocab_train import train_text_model
  os.makedirs(directory, exist_ok=True)
  corpus = os.path.join(directory, "corpus.txt")
  with open(corpus, "w", encoding="utf-8") as f:
    f.write("\n".join(corpus_lines()) + "\n")
  return train_text_model([corpus], os.path.join(directory, "sp"), vocab_size)


def uid_image_sample(uid: int, rng: np.random.Generator, grid: int = 4) -> Sample:
  """An image-text pair whose image codes all equal `uid`, so it can be found in packed rows."""
  return Sample("image_text", [{"type": "image", "codes": np.full((grid, grid), uid, np.int32)},
                               {"type": "text", "text": sentence(rng)}], "synthetic", {"id": uid})


def write_samples(path: str, samples, *, kinds_index: bool = False) -> str:
  """A shard of `samples`; with kinds_index, also its SHARD.kinds (as the tokenization job writes)."""
  samples = list(samples)
  with ShardWriter(path) as w:
    for s in samples:
      w.write(s)
  if kinds_index:
    from mio_jax.data import kinds_index as index
    index.write(path, [s.kind for s in samples])
  return path


def pipeline_config(data_dir: str, text_model: str, weights: dict[str, float], *, stage: int = 1,
                    size: str = "smoke", **data_overrides):
  """The stage's preset reading `{data_dir}/{source}/*.array_record` with `weights`."""
  import ml_collections
  from configs.base import stage_config
  cfg = stage_config(stage, size)
  cfg.vocab.update(text_model=text_model, text_size=0, image_codes=8192)
  cfg.data.update(source="shards", data_dir=data_dir)
  cfg.data.sources = ml_collections.ConfigDict(
      {name: {"shards": f"{name}/*.array_record", "weight": float(w), "kinds": ""}
       for name, w in weights.items()})
  cfg.data.update(data_overrides)
  return cfg
