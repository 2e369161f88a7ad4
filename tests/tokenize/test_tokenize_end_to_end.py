"""End to end on a slice of data/mini: every shard sample equals its input encoded on its own.

The oracle reads each manifest row again with plain json / Pillow / soundfile / PyAV and encodes
each image, frame and clip alone (batch of one, no padding from batch mates), so it checks the
job's batching, padding, frame selection, ordering and part assembly. Speech uses the ported
SpeechTokenizer and the ported VQGAN, both with tiny random weights
(mio_jax.tokenize.tiny_tokenizers).
"""

import glob
import json
import os

import av
import numpy as np
import soundfile as sf
from PIL import Image

from mio_jax.data.shards import ShardReader
from mio_jax.tokenize import job
import tokenize_helpers as helpers

SUBSET = {"image_text": 8, "speech_text": 8, "video_text": 3, "interleaved": 2, "text": 4,
          "conversation": 10}


class Pending:
  """An oracle result to be filled in by Oracle.resolve()."""
  value = None


class Oracle:
  """Codes for each input computed without the job's code: every image, frame and clip is read again
  with Pillow / soundfile / PyAV and encoded in reverse order of request, in batches of its own (so
  with other batch mates, at other rows, than in the job), by the same compiled encoder."""

  def __init__(self, image_encoder, speech_encoder):
    self.image, self.speech = image_encoder, speech_encoder
    self.images, self.clips = [], []

  def image_codes(self, pixels):
    out = Pending()
    self.images.append((pixels, out))
    return out

  def image_file(self, path):
    return self.image_codes(np.asarray(Image.open(path).convert("RGB")))

  def speech_file(self, path):
    wave, rate = sf.read(path, dtype="float32")
    assert rate == 16000
    out = Pending()
    self.clips.append((wave, out))
    return out

  def video_file(self, path, frame_ids):
    with av.open(path) as c:
      frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    return [self.image_codes(frames[i]) for i in frame_ids]

  def resolve(self):
    b = helpers.TEST_BATCH
    images = self.images[::-1]
    for start in range(0, len(images), b):
      chunk = images[start:start + b]
      batch = np.zeros((b,) + chunk[0][0].shape, np.uint8)
      batch[:len(chunk)] = [px for px, _ in chunk]
      codes = np.asarray(self.image.tokenizer.encode(batch))
      for i, (_, out) in enumerate(chunk):
        out.value = codes[i].reshape(self.image.grid, self.image.grid)
    clips = self.clips[::-1]
    for start in range(0, len(clips), b):
      chunk = clips[start:start + b]
      batch = np.zeros((b, helpers.TEST_PAD), np.float32)
      lengths = np.full(b, helpers.TEST_PAD)
      for i, (wave, _) in enumerate(chunk):
        batch[i, :len(wave)], lengths[i] = wave, len(wave)
      codes = np.asarray(self.speech.tokenizer.encode(batch, lengths=lengths, n_q=8))
      for i, (wave, out) in enumerate(chunk):
        frames = -(-len(wave) // 320)
        assert (codes[:, i, frames:] == -1).all()
        out.value = codes[:, i, :frames]


def value(codes):
  return np.stack([c.value for c in codes]) if isinstance(codes, list) else codes.value


def expected_parts(kind, row, oracle, descriptions):
  def video(path, mode):
    if mode == "uniform":  # 16 frames, 4 samples: the centres of 4 equal segments
      return oracle.video_file(path, [2, 6, 10, 14])
    return oracle.video_file(path, [0, 8] if "scene cuts" in descriptions[path] else [0])

  def media_part(p, role=None, mode="keyframes"):
    t = p["type"]
    if t == "text":
      out = {"type": "text", "text": p["text"]}
    else:
      fn = {"image": oracle.image_file, "speech": oracle.speech_file,
            "video": lambda path: video(path, mode)}[t]
      out = {"type": t, "codes": fn(p["path"])}
    if role:
      out["role"] = role
    return out

  if kind == "image_text":
    return [media_part({"type": "image", "path": row["image"]}), {"type": "text", "text": row["caption"]}]
  if kind == "speech_text":
    return [media_part({"type": "speech", "path": row["audio"]}), {"type": "text", "text": row["transcript"]}]
  if kind == "video_text":
    return [media_part({"type": "video", "path": row["video"]}, mode="uniform"),
            {"type": "text", "text": row["description"]}]
  if kind == "text":
    return [{"type": "text", "text": row["text"]}]
  if kind == "interleaved":
    return [media_part(p) for p in row["parts"]]
  parts = []
  for m in row["messages"]:
    content = m["content"] if isinstance(m["content"], list) else [{"type": "text", "text": m["content"]}]
    parts += [media_part(p, m["role"]) for p in content]
  return parts


def read_all(out):
  samples = []
  for path in sorted(glob.glob(os.path.join(out, "shards", "*.array_record"))):
    reader = ShardReader(path)
    samples += [reader[i] for i in range(len(reader))]
  return samples


def test_mini_slice_round_trips_to_each_inputs_own_codes(tmp_path):
  manifests_in = helpers.subset_manifests(str(tmp_path / "in"), SUBSET)
  pair = helpers.shared_encoders()
  summary = job.run(helpers.job_config(",".join(manifests_in), tmp_path / "out"), pair)
  total = sum(SUBSET.values())
  assert summary["job"] == {"read": total, "written": total, "quarantined": 0, "reasons": {}}

  samples = read_all(str(tmp_path / "out"))
  assert [s.meta["index"] for s in samples] == list(range(total))  # complete, ordered, no duplicates
  with open(os.path.join(helpers.MINI, "video_text.jsonl")) as f:
    descriptions = {os.path.join(helpers.MINI, r["video"]): r["description"] for r in map(json.loads, f)}
  oracle = Oracle(*pair)
  wants = []
  for s in samples:
    path, line = s.source.rsplit(":", 1)
    with open(path) as f:
      row = json.loads(f.readlines()[int(line) - 1])
    wants.append(expected_parts(s.kind, row, oracle, descriptions))
  oracle.resolve()
  kinds_seen = set()
  for s, want in zip(samples, wants):
    assert [(p["type"], p.get("role")) for p in s.parts] == [(p["type"], p.get("role")) for p in want], s.source
    for got, exp in zip(s.parts, want):
      if exp["type"] == "text":
        assert got["text"] == exp["text"], s.source
      else:
        np.testing.assert_array_equal(got["codes"], value(exp["codes"]), err_msg=s.source)
    kinds_seen.add(s.kind)
  assert kinds_seen == set(SUBSET)
  # Codes are not constant: the oracle comparison above is not comparing zeros with zeros.
  speech = np.concatenate([p["codes"] for s in samples for p in s.parts if p["type"] == "speech"], 1)
  assert all(len(np.unique(layer)) > 3 for layer in speech)
