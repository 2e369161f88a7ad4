"""Input readers: JSONL kinds, folders with sidecar text, TFDS feature mapping."""

import json
import os

import numpy as np

from mio_jax.tokenize import manifests
from tokenize_helpers import MINI


def test_mini_manifests_parse_with_their_kinds():
  for kind in manifests.KINDS:
    samples = manifests.read_jsonl(os.path.join(MINI, f"{kind}.jsonl"))
    assert samples and all(s.kind == kind and s.error is None for s in samples), kind
    for s in samples:
      for p in s.parts:
        if p["type"] != "text":
          assert os.path.exists(p["path"]), p


def test_conversation_roles_and_media_parts(tmp_path):
  path = tmp_path / "c.jsonl"
  row = {"messages": [{"role": "system", "content": "Be brief."},
                      {"role": "user", "content": [{"type": "image", "path": "x.png"},
                                                   {"type": "text", "text": "What is it?"}]},
                      {"role": "assistant", "content": [{"type": "speech", "path": "y.wav"}]}]}
  path.write_text(json.dumps(row) + "\n" + json.dumps({"messages": [{"role": "bot", "content": "x"}]}) + "\n")
  good, bad = manifests.read_jsonl(str(path))
  assert [(p["type"], p["role"]) for p in good.parts] == [
      ("text", "system"), ("image", "user"), ("text", "user"), ("speech", "assistant")]
  assert good.parts[1]["path"] == str(tmp_path / "x.png")
  assert bad.error and "role 'bot'" in bad.error and bad.source == f"{path}:2"


def test_folder_reader_pairs_media_with_sidecars(tmp_path):
  for name in ("b.wav", "b.txt", "a.png", "a.txt", "c.mp4", "notes.md"):
    (tmp_path / name).write_bytes(b"x")
  got = manifests.read_folder(str(tmp_path))
  assert [(s.kind, os.path.basename(s.source), s.error) for s in got] == [
      ("image_text", "a.png", None), ("speech_text", "b.wav", None),
      ("video_text", "c.mp4", f"missing sidecar text: {tmp_path / 'c.txt'}")]


def test_read_inputs_rejects_unknown_path_naming_the_key():
  try:
    manifests.read_inputs("/no/such/file.jsonl")
  except manifests.ManifestError as e:
    assert "/no/such/file.jsonl" in str(e) and "input" in str(e)
  else:
    raise AssertionError("expected ManifestError")


def test_tfds_feature_mappings():
  img = np.zeros((300, 300, 3), np.uint8)
  parts = manifests.coco_captions_parts({"image": img, "captions": {"text": [b"A cat.", b"A pet."]}})
  assert parts[0]["array"] is img and parts[1] == {"type": "text", "text": "A cat."}
  speech = np.arange(100, dtype=np.int16)
  parts = manifests.librispeech_parts({"speech": speech, "text": b"HELLO WORLD", "id": b"1-2-3"})
  assert parts[0]["wave"] is speech and parts[0]["sample_rate"] == 16000
  assert parts[1]["text"] == "hello world"
