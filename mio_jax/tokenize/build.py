"""One shard's contents: decoded samples -> batched encoder calls -> shard Samples + quarantine rows.

The images (and video frames) of a shard are encoded in fixed-size batches in sample order, and the
speech clips likewise (grouped by padded length), each batch sent as soon as it is full while later
samples still decode. A shard's batches depend only on the shard's own samples, never on which
shards ran before it: a resumed job produces the same bytes as one that ran straight through.
"""

import numpy as np

from mio_jax.tokenize import encoders as enc
from mio_jax.tokenize import quarantine
from mio_jax.tokenize.media import MediaError


def needs(parts: list[dict]) -> tuple[bool, bool]:
  types = {p["type"] for p in parts}
  return bool(types & {"image", "video"}), "speech" in types


def build_shard(shard: int, items, image_encoder, speech_encoder, image_batch_size: int,
                speech_batch_size: int):
  """items: (index, RawSample, decoded parts | MediaError) in sample order, possibly a lazy iterator
  (decoding still running): media go to the encoders as soon as a batch is full.

  Returns (samples, quarantined): shard Sample objects and quarantine records.
  """
  from mio_jax.data.shards import Sample  # the shard schema (mio_jax/data/shards.py)

  images = enc.ImageBatcher(image_encoder, image_batch_size) if image_encoder else None
  clips = enc.SpeechBatcher(speech_encoder, speech_batch_size) if speech_encoder else None
  good, quarantined = [], []
  for index, raw, decoded in items:
    if isinstance(decoded, MediaError):
      quarantined.append(quarantine.record(raw.source, raw.kind, str(decoded), decoded.category,
                                           index, shard))
      continue
    want_image, want_speech = needs(decoded)
    missing = ("image tokenizer (config key image_tokenizer)" if want_image and images is None
               else "speech tokenizer (config key speech_tokenizer)" if want_speech and clips is None
               else None)
    if missing:
      quarantined.append(quarantine.record(raw.source, raw.kind, f"no {missing} configured",
                                           "no tokenizer", index, shard))
      continue
    for p in decoded:
      if p["type"] == "image":
        images.add(p["pixels"])
      elif p["type"] == "video":
        for frame in p["frames"]:
          images.add(frame)
      elif p["type"] == "speech":
        clips.add(p["wave"])
    good.append((index, raw, decoded))

  image_codes = iter(images.finish() if images else [])
  speech_codes = iter(clips.finish() if clips else [])
  samples = []
  for index, raw, parts in good:
    out = []
    for p in parts:
      if p["type"] == "text":
        new = {"type": "text", "text": p["text"]}
      elif p["type"] == "image":
        new = {"type": "image", "codes": next(image_codes)}
      elif p["type"] == "video":
        new = {"type": "video", "codes": np.stack([next(image_codes) for _ in p["frames"]])}
      else:
        new = {"type": "speech", "codes": next(speech_codes)}
      if "role" in p:
        new["role"] = p["role"]
      out.append(new)
    samples.append(Sample(kind=raw.kind, parts=out, source=raw.source, meta={"index": index}))
  return samples, quarantined
