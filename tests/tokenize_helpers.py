"""Helpers shared by the tokenization tests and benchmark: corpus subsets, planted bad inputs, the
tiny tokenizers and their encoders built once per process, the mini job config.

Test code, kept out of the package: tests import it by name (pytest puts tests/ on sys.path);
benchmarks/tokenize_throughput.py puts tests/ on its path first."""

import io
import json
import os

import numpy as np
import soundfile as sf
from PIL import Image

from mio_jax.tokenize.manifests import KINDS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MINI = os.path.join(REPO, "data", "mini")
_PATH_KEYS = ("image", "audio", "video", "path")


def _absolute(obj, base):
  """Manifest row with every media path made absolute (so the row can live in another folder)."""
  if isinstance(obj, dict):
    return {k: (os.path.join(base, v) if k in _PATH_KEYS and isinstance(v, str) else _absolute(v, base))
            for k, v in obj.items()}
  if isinstance(obj, list):
    return [_absolute(v, base) for v in obj]
  return obj


def subset_manifests(out_dir: str, per_kind: dict[str, int], corpus: str = MINI) -> list[str]:
  """The first n rows of each data/mini manifest, in KINDS order, written to out_dir."""
  os.makedirs(out_dir, exist_ok=True)
  paths = []
  for kind in KINDS:
    n = per_kind.get(kind, 0)
    if not n:
      continue
    with open(os.path.join(corpus, f"{kind}.jsonl"), encoding="utf-8") as f:
      rows = [json.loads(line) for line in f][:n]
    path = os.path.join(out_dir, f"{kind}.jsonl")
    with open(path, "w", encoding="utf-8") as f:
      f.writelines(json.dumps(_absolute(r, corpus)) + "\n" for r in rows)
    paths.append(path)
  return paths


def _png(size, color=(200, 40, 40)) -> bytes:
  buf = io.BytesIO()
  Image.new("RGB", size, color).save(buf, format="PNG")
  return buf.getvalue()


def _wav(path, seconds, rate):
  t = np.arange(int(seconds * rate)) / rate
  sf.write(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), rate, subtype="PCM_16")


def plant_bad_inputs(root: str) -> tuple[str, dict[str, str], int]:
  """A manifest and a sidecar folder mixing good samples with one of each kind of bad input.

  Returns (input spec, {source: expected quarantine category}, number of good samples).
  Run it with media.resample=False (the 8 kHz clip is bad only then).
  """
  os.makedirs(root, exist_ok=True)
  p = lambda name: os.path.join(root, name)  # noqa: E731
  good_png = _png((256, 256))
  with open(p("good.png"), "wb") as f:
    f.write(good_png)
  with open(p("truncated.png"), "wb") as f:
    f.write(_png((256, 256), (10, 200, 90))[:200])
  with open(p("not_an_image.png"), "wb") as f:
    f.write(b"this is plain text, not a PNG file\n" * 4)
  Image.new("RGB", (100, 100)).save(p("small.png"))
  Image.new("RGB", (768, 256)).save(p("wide.png"))
  _wav(p("good.wav"), 1.0, 16000)
  sf.write(p("empty.wav"), np.zeros(0, np.float32), 16000)
  _wav(p("rate8k.wav"), 1.0, 8000)
  _wav(p("long.wav"), 16.0, 16000)
  with open(p("corrupt.wav"), "wb") as f:
    f.write(b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 7)
  with open(p("corrupt.mp4"), "wb") as f:
    f.write(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50)
  with open(os.path.join(MINI, "videos", "0001.mp4"), "rb") as f:
    video = f.read()
  with open(p("truncated.mp4"), "wb") as f:
    f.write(video[:len(video) // 3])

  image = lambda path, cap="a red square": json.dumps({"image": path, "caption": cap}).encode()  # noqa: E731
  audio = lambda path: json.dumps({"audio": path, "transcript": "a tone"}).encode()  # noqa: E731
  lines = [  # (raw line, expected category or None for good)
      (image(p("good.png")), None),
      (audio(p("good.wav")), None),
      (json.dumps({"text": "plain text is fine"}).encode(), None),
      (image(p("truncated.png")), "unreadable image"),
      (image(p("not_an_image.png")), "unreadable image"),
      (image(p("small.png")), "image under 224x224"),
      (image(p("wide.png")), "image aspect ratio over 2:1"),
      (image(p("missing.png")), "missing file"),
      (audio(p("empty.wav")), "zero-length audio"),
      (audio(p("rate8k.wav")), "unsupported sample rate"),
      (audio(p("long.wav")), "speech over 15 s"),
      (audio(p("corrupt.wav")), "unreadable audio"),
      (json.dumps({"video": p("corrupt.mp4"), "description": "x"}).encode(), "unreadable video"),
      (json.dumps({"video": p("truncated.mp4"), "description": "x"}).encode(), "unreadable video"),
      # Raw Latin-1 bytes in the caption: the line is not UTF-8.
      (b'{"image": "' + p("good.png").encode() + b'", "caption": "caf\xe9"}', "manifest line is not valid UTF-8"),
      (image(p("good.png"), ""), "bad row"),  # empty caption
      (json.dumps({"image": p("good.png")}).encode(), "bad row"),  # no caption at all
      (b'{"text": "unterminated', "invalid JSON"),
      (b'{"text": "lone surrogate \\udcff"}', "bad row"),  # escapes to a str that is not UTF-8
  ]
  manifest = p("planted.jsonl")
  with open(manifest, "wb") as f:
    f.writelines(line + b"\n" for line, _ in lines)
  expected = {f"{manifest}:{i + 1}": cat for i, (_, cat) in enumerate(lines) if cat}

  # A folder with sidecar text: one good pair, a Latin-1 sidecar, a missing sidecar.
  folder = p("folder")
  os.makedirs(folder, exist_ok=True)
  for name in ("a_good", "b_latin1", "c_nosidecar"):
    with open(os.path.join(folder, name + ".png"), "wb") as f:
      f.write(good_png)
  with open(os.path.join(folder, "a_good.txt"), "w", encoding="utf-8") as f:
    f.write("a red square")
  with open(os.path.join(folder, "b_latin1.txt"), "wb") as f:
    f.write("un carr\u00e9 rouge".encode("latin-1"))
  expected[os.path.join(folder, "b_latin1.png")] = "text not UTF-8"
  expected[os.path.join(folder, "c_nosidecar.png")] = "missing sidecar text"
  n_good = sum(cat is None for _, cat in lines) + 1
  return f"{manifest},folder:{folder}", expected, n_good


_SHARED: dict = {}
TEST_BATCH = 8  # a multiple of the 8 forced host devices of the test suite
TEST_PAD = 48000  # mini clips are under 3 s: a single compiled speech shape


def tiny_tokenizer_dirs() -> tuple[str, str]:
  """Tiny random-weight tokenizers, built once per Python process: (speech dir, VQGAN dir)."""
  if "dirs" not in _SHARED:
    import tempfile
    from mio_jax.tokenize import tiny_tokenizers
    _SHARED["dirs"] = tiny_tokenizers.make_tiny_tokenizers(tempfile.mkdtemp(prefix="tiny_tokenizers_"))
  return _SHARED["dirs"]


def shared_encoders():
  """(image, speech) encoders over the tiny ported tokenizers, compiled once per Python process."""
  if "encoders" not in _SHARED:
    from mio_jax.tokenize import encoders
    speech_dir, image_dir = tiny_tokenizer_dirs()
    image = encoders.PortImageEncoder(image_dir, TEST_BATCH)
    _SHARED["encoders"] = (image, encoders.PortSpeechEncoder(speech_dir, TEST_BATCH, pad_multiple=TEST_PAD))
  return _SHARED["encoders"]


def job_config(input_spec: str, output_dir: str, shard_size: int = 16):
  """The mini preset pointed at input_spec, with the tiny tokenizers and test batch sizes."""
  import configs.tokenize as tokenize_config
  speech_dir, image_dir = tiny_tokenizer_dirs()
  c = tokenize_config.get_config("mini")
  c.input, c.output_dir, c.shard_size, c.progress = input_spec, str(output_dir), shard_size, False
  c.speech_tokenizer, c.image_tokenizer = speech_dir, image_dir
  c.image_batch_size = c.speech_batch_size = TEST_BATCH
  c.speech_pad_multiple = TEST_PAD
  return c


def tokenize_mini_subset(in_dir: str, out_dir: str, per_kind: int, shard_size: int) -> dict:
  """The first `per_kind` samples of every mini-corpus kind, tokenized by the job with the encoder
  doubles into out_dir (shards: out_dir/shards/*.array_record); returns the job's summary."""
  import configs.tokenize as tokenize_config
  import encoder_doubles
  from mio_jax.tokenize import job
  c = tokenize_config.get_config("mini")
  c.input = ",".join(subset_manifests(in_dir, {k: per_kind for k in KINDS}))
  c.output_dir, c.shard_size, c.progress = out_dir, shard_size, False
  c.process_index, c.process_count = 0, 1
  return job.run(c, encoder_doubles.use_double_encoders(c))
