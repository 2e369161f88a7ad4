"""Held-out split of a manifest: which rows go where, absolute media paths, media used elsewhere."""

import json
import os

import pytest

from mio_jax.tokenize.holdout import media_paths, split_corpus, split_manifest


def _write(path, rows):
  with open(path, "w") as f:
    for row in rows:
      f.write((row if isinstance(row, str) else json.dumps(row)) + "\n")


def _read(path):
  return [json.loads(line) for line in open(path)]


def test_every_nth_eligible_row_is_held_out_with_absolute_paths(tmp_path):
  src = tmp_path / "corpus"
  src.mkdir()
  rows = [{"image": f"images/{i}.png", "caption": f"caption {i}"} for i in range(10)]
  _write(src / "image_text.jsonl", rows + ["{not json"])
  train, heldout = split_manifest(str(src / "image_text.jsonl"), str(tmp_path / "out"), every=3)
  held, kept = _read(heldout), open(train).read().splitlines()
  assert [r["caption"] for r in held] == ["caption 2", "caption 5", "caption 8"]
  assert len(kept) == 8 and kept[-1] == "{not json"  # the bad row stays, for the job to quarantine
  assert held[0]["image"] == os.path.join(str(src), "images/2.png")
  assert json.loads(kept[0])["image"] == os.path.join(str(src), "images/0.png")


def test_rows_whose_media_other_manifests_use_stay_in_training(tmp_path):
  src = tmp_path / "corpus"
  src.mkdir()
  _write(src / "speech_text.jsonl", [{"audio": f"speech/{i}.wav", "transcript": f"t {i}"} for i in range(6)])
  _write(src / "conversation.jsonl", [{"messages": [
      {"role": "user", "content": [{"type": "speech", "path": "speech/1.wav"}]},
      {"role": "assistant", "content": "t 1"}]}])
  _write(src / "interleaved.jsonl", [{"parts": [{"type": "speech", "path": "speech/3.wav"},
                                                {"type": "text", "text": "doc"}]}])
  used = media_paths([str(src / "conversation.jsonl"), str(src / "interleaved.jsonl")])
  assert used == {os.path.join(str(src), "speech/1.wav"), os.path.join(str(src), "speech/3.wav")}
  train, heldout = split_manifest(str(src / "speech_text.jsonl"), str(tmp_path / "out"), 2, frozenset(used))
  # Eligible rows are 0, 2, 4, 5; every 2nd of them is held out.
  assert [r["transcript"] for r in _read(heldout)] == ["t 2", "t 5"]
  assert [r["transcript"] for r in _read(train)] == ["t 0", "t 1", "t 3", "t 4"]


def test_every_below_two_is_refused(tmp_path):
  _write(tmp_path / "m.jsonl", [{"text": "x"}])
  with pytest.raises(ValueError, match="every=1"):
    split_manifest(str(tmp_path / "m.jsonl"), str(tmp_path / "out"), every=1)


def test_split_corpus_splits_the_named_kinds_and_keeps_the_others_whole(tmp_path):
  src = tmp_path / "corpus"
  src.mkdir()
  _write(src / "image_text.jsonl", [{"image": f"img/{i}.png", "caption": f"c {i}"} for i in range(6)])
  _write(src / "interleaved.jsonl", [{"parts": [{"type": "image", "path": "img/2.png"}]}])
  sources = {"interleaved": str(src / "interleaved.jsonl"), "image_text": str(src / "image_text.jsonl")}
  train, heldout = split_corpus(sources, str(tmp_path / "out"), {"image_text": 2})
  assert list(train) == ["interleaved", "image_text"] and list(heldout) == ["image_text"]
  assert train["interleaved"] == sources["interleaved"]  # not split: the original file
  # img/2.png is used by the interleaved document: eligible rows 0, 1, 3, 4, 5, every 2nd held out.
  assert [r["caption"] for r in _read(heldout["image_text"])] == ["c 1", "c 4"]
  assert [r["caption"] for r in _read(train["image_text"])] == ["c 0", "c 2", "c 3", "c 5"]
