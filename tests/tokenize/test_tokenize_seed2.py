"""The tokenization job with a SEED-Tokenizer-2 folder (`--config.image_tokenizer=DIR`), and training
config checks against its shards.

The image tokenizer is a tiny random-weight SEED folder in the converter's format
(mio_jax.tokenize.tiny_tokenizers.make_tiny_seed: 56 px, 32 queries, 8192 codes). Oracles: each
image read again with Pillow, squash-resized as MIO's clip_transform does (PIL bilinear to S x S) and
encoded alone by `tokenizers_port.seed.load(DIR).encode`; video frame indices computed by hand from
MIO's extract_frames rule (every max(1, frame_count // 10)-th frame).
"""

import json

import av
import numpy as np
import pytest
from PIL import Image, ImageDraw

from mio_jax.config.keys import ConfigError
from mio_jax.data.shards import ShardReader
from mio_jax.tokenize import job
import tokenize_helpers as helpers

# The job's fixture compiles the tiny SEED encoder and decodes a video (~25 s on 2 cores): the cases
# that read its output are in the slow set; the one-line config errors stay in the default run.
_JOB = pytest.mark.slow

VIDEO_FRAMES = 25  # MIO: interval 25 // 10 = 2 -> frames 0, 2, ..., 24
VIDEO_KEPT = list(range(0, 25, 2))


def _picture(w, h, k):
  img = Image.new("RGB", (w, h), (20 * k % 256, 90, 200 - 30 * k % 200))
  ImageDraw.Draw(img).ellipse((w // 5, h // 4 + 5 * k, w // 2 + 7 * k, h - h // 5), fill=(240, 40 * k % 256, 30))
  return img


def _write_video(path, n, size=224):
  with av.open(path, "w", format="mp4") as container:
    stream = container.add_stream("libx264", rate=8)
    stream.width, stream.height, stream.pix_fmt = size, size, "yuv420p"
    stream.options = {"crf": "20", "preset": "ultrafast", "threads": "1"}
    for t in range(n):  # a square sliding right on a changing background: every frame differs
      img = Image.new("RGB", (size, size), (10 * t % 256, 60, 120))
      ImageDraw.Draw(img).rectangle((8 * t, 60, 8 * t + 60, 160), fill=(250, 220, 20))
      for packet in stream.encode(av.VideoFrame.from_ndarray(np.asarray(img), format="rgb24")):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)


@pytest.fixture(scope="module")
def tokenized(tmp_path_factory):
  from mio_jax.tokenize import tiny_tokenizers
  root = tmp_path_factory.mktemp("seed2_job")
  seed_dir = tiny_tokenizers.make_tiny_seed(str(root / "seed"))
  sizes = [(224, 224), (300, 240), (100, 100), (256, 224)]  # the third is under MIO's 224 px
  rows = []
  for k, (w, h) in enumerate(sizes):
    path = str(root / f"img{k}.png")
    _picture(w, h, k).save(path)
    rows.append({"image": path, "caption": f"picture number {k}"})
  with open(root / "image_text.jsonl", "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)
  _write_video(str(root / "clip.mp4"), VIDEO_FRAMES)
  with open(root / "video_text.jsonl", "w") as f:
    f.write(json.dumps({"video": str(root / "clip.mp4"), "description": "a yellow square slides"}) + "\n")
  c = helpers.job_config(f"{root / 'image_text.jsonl'},{root / 'video_text.jsonl'}", str(root / "out"))
  c.image_tokenizer, c.speech_tokenizer = seed_dir, ""
  c.process_index, c.process_count = 0, 1
  summary = job.run(c)  # the encoder is built from the folder: its config.json says SEED
  samples = [s for path in sorted((root / "out" / "shards").glob("*.array_record"))
             for s in ShardReader(str(path))]
  return {"root": root, "seed": seed_dir, "rows": rows, "summary": summary, "samples": samples}


def _oracle(seed_dir, pixels: list[np.ndarray]) -> np.ndarray:
  from tokenizers_port import seed
  tok = seed.load(seed_dir)
  s = tok.config.image_size
  resized = [np.asarray(Image.fromarray(p).resize((s, s), Image.BILINEAR)) for p in pixels]
  return np.concatenate([np.asarray(tok.encode(r[None])) for r in resized])  # one image at a time


@_JOB
def test_image_codes_equal_the_port_encoding_each_image_alone(tokenized):
  images = [s for s in tokenized["samples"] if s.kind == "image_text"]
  assert [s.source.rsplit(":", 1)[-1] for s in images] == ["1", "2", "4"]  # row 3 quarantined
  kept = [tokenized["rows"][i] for i in (0, 1, 3)]
  want = _oracle(tokenized["seed"], [np.asarray(Image.open(r["image"]).convert("RGB")) for r in kept])
  got = np.stack([next(p["codes"] for p in s.parts if p["type"] == "image") for s in images])
  assert got.shape == (3, 1, 32) and got.dtype == np.int32
  np.testing.assert_array_equal(got[:, 0], want)
  assert len(np.unique(want)) > 20  # the codes depend on the image and the query


@_JOB
def test_small_image_is_quarantined_with_its_reason(tokenized):
  rows = [json.loads(line) for line in open(tokenized["root"] / "out" / "quarantine.jsonl")]
  assert len(rows) == 1
  assert rows[0]["category"] == "image under 224x224"
  assert rows[0]["reason"] == f"image under 224x224 (100x100): {tokenized['rows'][2]['image']}"
  assert tokenized["summary"]["job"] == {"read": 5, "written": 4, "quarantined": 1,
                                         "reasons": {"image under 224x224": 1}}


@_JOB
def test_video_takes_mio_extract_frames_indices(tokenized):
  video = next(s for s in tokenized["samples"] if s.kind == "video_text")
  codes = next(p["codes"] for p in video.parts if p["type"] == "video")
  assert codes.shape == (len(VIDEO_KEPT), 1, 32)  # 13 frames: MIO's "~10"
  with av.open(str(tokenized["root"] / "clip.mp4")) as c:
    frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
  assert len(frames) == VIDEO_FRAMES
  np.testing.assert_array_equal(codes[:, 0], _oracle(tokenized["seed"], [frames[i] for i in VIDEO_KEPT]))


@_JOB
def test_index_records_the_tokenizer_and_plan_the_squash_resize(tokenized):
  out = tokenized["root"] / "out"
  index = json.loads((out / "index.json").read_text())
  assert index["image_codes"] == {"tokenizer": "seed2", "codes_per_image": 32, "codebook_size": 8192}
  media = json.loads((out / "plan.json").read_text())["settings"]["media"]
  assert (media["image_size"], media["image_resize"]) == (56, "squash_bilinear")
  assert (media["pair_video_mode"], media["num_frames"]) == ("mio_uniform", 10)


def test_unknown_tokenizer_folder_is_one_line(tmp_path):
  from mio_jax.tokenize import encoders
  (tmp_path / "config.json").write_text('{"something": 1}')
  with pytest.raises(ConfigError) as e:
    encoders.image_tokenizer_kind(str(tmp_path))
  assert "\n" not in str(e.value) and "is not a VQGAN, SEED or UniCode2 config" in str(e.value)


def test_bad_video_mode_is_one_line(tmp_path):
  c = helpers.job_config("unused.jsonl", str(tmp_path))
  c.media.pair_video_mode = "every_frame"
  with pytest.raises(ConfigError, match=r"^config.media.pair_video_mode='every_frame' is not one of auto, "):
    job.media_config(c, None)


def _training_config(out, image_tokens=32):
  from configs.base import stage_config
  c = stage_config(1, "smoke")
  c.vocab.code_order = "image_first"
  c.data.mixed_shards = str(out / "shards" / "*.array_record")
  c.data.image_tokens = image_tokens
  for name in c.data.sources:  # the job's shards hold image_text and video_text samples
    c.data.sources[name].weight = 1.0 if name == "image_text" else 0.0
  return c


@_JOB
def test_training_config_checked_against_the_shards(tokenized):
  import jax
  from mio_jax.train.validate import validate
  out = tokenized["root"] / "out"
  validate(_training_config(out), jax.devices())
  with pytest.raises(ConfigError) as e:
    validate(_training_config(out, image_tokens=256), jax.devices())
  assert str(e.value).startswith("config.data.image_tokens=256 but ") and "set config.data.image_tokens=32" in str(e.value)
  c = _training_config(out)
  c.vocab.image_codes = 4096
  with pytest.raises(ConfigError, match=r"^config.vocab.image_codes=4096 is smaller than the 8192-code book"):
    validate(c, jax.devices())


@_JOB
def test_packed_rows_hold_32_code_image_blocks(tokenized):
  from mio_jax.data import pipeline
  from mio_jax.train.code_order import training_vocab
  c = _training_config(tokenized["root"] / "out")
  c.data.update(source="shards", seq_len=256, global_batch=2, worker_count=0)
  vocab = training_vocab(c)
  lo, hi = vocab.image_base, vocab.image_base + 8192
  batch = next(iter(pipeline.build_dataset(c.data, vocab)))
  blocks = 0
  for row in batch["inputs"]:
    for start in np.flatnonzero(row == vocab.image_start):
      body = row[start + 1:start + 33]
      if len(body) < 32:
        continue  # cut by the row's end
      assert ((body >= lo) & (body < hi)).all() and row[start + 33] == vocab.image_end
      blocks += 1
  assert blocks >= 2


@_JOB
def test_training_steps_on_the_seed_shards_record_the_block_length(tokenized, tmp_path):
  from mio_jax.generate.load import checkpoint_image_tokens
  from mio_jax.train.loop import train
  c = _training_config(tokenized["root"] / "out")
  c.data.update(source="shards", seq_len=256, global_batch=8, worker_count=0)
  c.train.update(steps=2, log_every=1, checkpoint_every=2, async_checkpointing=False)
  result = train(c, str(tmp_path / "run"))
  assert sorted(result.losses) == [1, 2] and np.isfinite(list(result.losses.values())).all()
  assert checkpoint_image_tokens(str(tmp_path / "run")) == 32  # generation makes 32-code blocks
