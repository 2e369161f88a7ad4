"""UniCode2 end to end at toy size, as a user runs it: images -> SigLIP patch embeddings
(launch/embed_patches.py's job) -> k-means fit -> tokenizer folder -> the tokenization job with
`--config.image_tokenizer=DIR`.

The tower is the port's tiny preset with random weights (62 px, a 4 x 4 patch grid). Oracles: every
image read again with Pillow and squash-resized bicubic (SiglipImageProcessor's resize) and encoded
alone by the SigLIP port; ids against a float64 brute-force nearest centroid (decisions closer than
float32 can resolve counted apart); quarantine reasons against the planted files.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from codebook_helpers import tiny_config
from mio_jax.codebook import tokenizer as u2
from mio_jax.codebook.fit import fit
from mio_jax.data.shards import ShardReader
from mio_jax.tokenize import job
import tokenize_helpers as helpers

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
K = 12
KEEP = 5  # patches kept per image of 16
# The pipeline compiles the tower, the fit and the tokenizer (~10 s on 2 AVX-512 cores, ~25 s AVX2):
# its three cases are in the slow set; the one-line folder errors stay in the default run.
_PIPELINE = pytest.mark.slow


def _photos():
  from skimage import data
  return [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
  from mio_jax.tokenize import tiny_tokenizers
  from tokenizers_port import siglip
  root = tmp_path_factory.mktemp("unicode2")
  siglip_dir = tiny_tokenizers.make_tiny_siglip(str(root / "siglip"))
  rows = []
  for k, photo in enumerate(_photos()):
    Image.fromarray(photo).save(root / f"photo{k}.png")
    rows.append({"image": str(root / f"photo{k}.png"), "caption": f"photo {k}"})
  Image.new("RGB", (100, 120), (9, 9, 9)).save(root / "small.png")  # under MIO's 224 px
  (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
  rows += [{"image": str(root / "small.png"), "caption": "small"},
           {"image": str(root / "broken.png"), "caption": "broken"}]
  manifest = root / "image_text.jsonl"
  manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))

  encoder = siglip.load(siglip_dir)
  cli = subprocess.run([sys.executable, os.path.join(REPO, "launch", "embed_patches.py"), f"--siglip={siglip_dir}",
                        f"--inputs={manifest}", f"--out={root / 'emb'}", "--batch_size=8",
                        f"--patches_per_image={KEEP}", "--rows_per_file=7", "--seed=3"],
                       capture_output=True, text=True, timeout=300)
  assert cli.returncode == 0, cli.stderr[-2000:]
  assert cli.stdout.strip().endswith(f"{4 * KEEP} patch embeddings of width 64 from 4 images (2 quarantined) in 3 files")
  summary = json.load(open(root / "emb" / "index-00000-of-00001.json"))
  config = tiny_config(str(root / "emb"), num_clusters=K, global_batch=8, init_points=16, passes=4,
                       block_size=8, algorithm="lloyd")
  fit(config, str(root / "fit"))
  u2.make_tokenizer(siglip_dir, str(root / "fit" / "codebook.npy"), str(root / "u2"), block_size=8)
  return {"root": root, "siglip": siglip_dir, "encoder": encoder, "summary": summary, "rows": rows}


def _pixels(path, size):
  return np.asarray(Image.open(path).convert("RGB").resize((size, size), Image.Resampling.BICUBIC))


def _patches(p, path):
  return np.asarray(p["encoder"].encode_patches(_pixels(path, 62)[None]))[0]


@_PIPELINE
def test_embedding_files_hold_each_good_images_patches_and_quarantine_the_rest(pipeline):
  s, root = pipeline["summary"], pipeline["root"]
  assert (s["read"], s["embedded"], s["quarantined"]) == (6, 4, 2)
  assert s["rows"] == 4 * KEEP and [f["rows"] for f in s["files"]] == [7, 7, 6]
  rows = np.concatenate([np.load(root / "emb" / f["file"]) for f in s["files"]])
  for k in range(4):  # each image: KEEP distinct rows, each one of its own 16 patches, in order
    mine = rows[k * KEEP:(k + 1) * KEEP]
    full = _patches(pipeline, root / f"photo{k}.png")
    match = [int(np.abs(full - r).max(axis=1).argmin()) for r in mine]
    assert all(np.abs(full[j] - r).max() <= 1e-5 * np.abs(full).max() for j, r in zip(match, mine))
    assert match == sorted(set(match)) and len(match) == KEEP
  bad = [json.loads(line) for line in open(root / "emb" / "quarantine-00000-of-00001.jsonl")]
  assert sorted(b["category"] for b in bad) == ["image under 224x224", "unreadable image"]
  assert all(str(root) in b["reason"] and "\n" not in b["reason"] for b in bad)


@_PIPELINE
def test_tokenizer_ids_are_the_nearest_centroids(pipeline):
  root = pipeline["root"]
  tok = u2.load(str(root / "u2"))
  assert (tok.codes_per_image, tok.codebook_size, tok.image_size) == (16, K, 62)
  book = np.load(root / "fit" / "codebook.npy").astype(np.float64)
  images = np.stack([_pixels(root / f"photo{k}.png", 62) for k in range(4)])
  ids = tok.encode(images)
  assert ids.shape == (4, 16) and ids.dtype == np.int32
  patches = np.asarray(pipeline["encoder"].encode_patches(images), np.float64).reshape(-1, book.shape[1])
  d = ((patches[:, None, :] - book[None]) ** 2).sum(-1)
  want = d.argmin(1)
  two = np.sort(d, axis=1)[:, :2]
  resolvable = two[:, 1] - two[:, 0] > 1e-5 * two[:, 0]
  assert resolvable.sum() >= 60
  np.testing.assert_array_equal(ids.reshape(-1)[resolvable], want[resolvable])
  assert len(np.unique(ids)) > 1


@_PIPELINE
def test_tokenization_job_takes_the_unicode2_folder(pipeline, tmp_path):
  root, rows = pipeline["root"], pipeline["rows"]
  c = helpers.job_config(str(root / "image_text.jsonl"), str(tmp_path / "out"))
  c.image_tokenizer, c.speech_tokenizer = str(root / "u2"), ""
  c.process_index, c.process_count = 0, 1
  summary = job.run(c)
  assert summary["job"]["written"] == 4 and summary["job"]["quarantined"] == 2
  index = json.load(open(tmp_path / "out" / "index.json"))
  assert index["image_codes"] == {"tokenizer": "unicode2", "codes_per_image": 16, "codebook_size": K}
  samples = {s.source: s for p in sorted((tmp_path / "out" / "shards").glob("*.array_record"))
             for s in ShardReader(str(p))}
  tok = u2.load(str(root / "u2"))
  for line, row in enumerate(rows[:4], start=1):
    sample = samples[f"{root / 'image_text.jsonl'}:{line}"]
    codes = [p["codes"] for p in sample.parts if p["type"] == "image"][0]
    np.testing.assert_array_equal(codes, tok.encode(_pixels(row["image"], 62)[None]).reshape(4, 4))


def test_bad_folders_are_one_line_errors_naming_the_file(tmp_path):
  from mio_jax.tokenize import tiny_tokenizers
  siglip_dir = tiny_tokenizers.make_tiny_siglip(str(tmp_path / "siglip"))
  wrong = tmp_path / "wrong.npy"
  np.save(wrong, np.zeros((K, 7), np.float32))
  with pytest.raises(u2.TokenizerError, match=rf"{wrong}: centroids of width 7.*width 64"):
    u2.make_tokenizer(siglip_dir, str(wrong), str(tmp_path / "t"))
  book = tmp_path / "book.npy"
  np.save(book, np.zeros((K, 64), np.float32))
  cfg = u2.make_tokenizer(siglip_dir, str(book), str(tmp_path / "u2"))
  assert cfg == {"kind": "unicode2", "num_clusters": K, "dim": 64, "codes_per_image": 16,
                 "image_size": 62, "block_size": 4096}
  with pytest.raises(u2.TokenizerError, match=r"codebook.npy: \[12, 64\] centroids, the config says \[13, 64\]"):
    u2.read_codebook(str(tmp_path / "u2" / "codebook.npy"), K + 1, 64)
  np.save(tmp_path / "ints.npy", np.zeros((K, 64), np.int32))
  with pytest.raises(u2.TokenizerError, match=r"ints.npy: a codebook is float \[K, d\], this is int32"):
    u2.read_codebook(str(tmp_path / "ints.npy"))
  bad = tmp_path / "bad"
  os.makedirs(bad)
  (bad / "config.json").write_text(json.dumps({"kind": "unicode2", "num_clusters": K, "colour": 1}))
  with pytest.raises(u2.TokenizerError, match=r"bad/config.json: not a UniCode2 tokenizer config \(unknown keys \['colour'\]"):
    u2.load(str(bad))
