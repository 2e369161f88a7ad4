"""`make demo`, shortened (3 steps per stage), end to end: every artefact exists and is valid.

The demo runs in a subprocess, as `make demo` runs it (it sets its own device count). Checked:
token shards and their accounting, the held-out split, four stage runs chained by init_from, the
learning-evidence table, the stage-4 task metrics, the Hugging Face export (transformers loads it and its logits equal ours),
and the generated media (the PNG decodes to the VQGAN's image size, the WAV has 16 kHz and the
length of its codes).
"""

import glob
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from mio_jax.parallel.cpu_devices import xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = 3

pytestmark = pytest.mark.slow  # the whole demo, shortened: minutes; every part has its own tests


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("demo"))
  env = dict(os.environ)
  env["XLA_FLAGS"] = xla_flags(env.get("XLA_FLAGS", ""), None)  # the demo sets its own device count
  start = time.monotonic()
  run = subprocess.run([sys.executable, os.path.join(ROOT, "launch", "demo.py"), f"--workdir={workdir}",
                        f"--steps={STEPS}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
  wall = time.monotonic() - start
  assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
  with open(os.path.join(workdir, "demo_summary.json")) as f:
    return workdir, json.load(f), run.stdout, wall


def test_prints_what_it_did_and_where(demo):
  workdir, summary, stdout, wall = demo
  assert "make demo: what it did" in stdout
  for step in summary["steps"]:
    assert step["what"] in stdout
  # The steps' own timings fit inside the subprocess's wall time, measured here.
  assert 0 < sum(step["seconds"] for step in summary["steps"]) <= wall
  assert summary["hf_export"] in stdout


def test_shards_account_for_every_sample_and_hold_out_unseen_media(demo):
  workdir, summary, _, _ = demo
  tokens = summary["tokens"]
  for split in ("train", "heldout"):
    assert glob.glob(tokens[split])
    with open(os.path.join(workdir, "tokens", split, "index.json")) as f:
      index = json.load(f)
    shards = index["shards"]
    assert sum(s["read"] for s in shards) == sum(s["written"] for s in shards) + index["quarantined"]
    assert index["num_samples"] == sum(s["read"] for s in shards)
  with open(os.path.join(ROOT, "data", "mini", "image_text.jsonl")) as f:
    pairs = sum(1 for _ in f)
  assert 0 < tokens["heldout_samples"] < pairs
  heldout = [json.loads(line) for m in glob.glob(os.path.join(workdir, "manifests", "heldout", "*.jsonl"))
             for line in open(m)]
  train_text = "".join(open(m).read() for m in glob.glob(os.path.join(workdir, "manifests", "train", "*.jsonl")))
  for row in heldout:
    media = row.get("image") or row.get("audio")
    assert os.path.isabs(media) and os.path.exists(media)
    assert json.dumps(media) not in train_text
  assert tokens["heldout_samples"] == len(heldout)


def test_four_stages_chain_and_learning_evidence_is_reported(demo):
  workdir, summary, _, _ = demo
  stages = summary["stages"]
  assert [s["stage"] for s in stages] == [1, 2, 3, 4]
  for s in stages:
    assert s["steps"] == STEPS and np.isfinite([s["first_loss"], s["last_loss"]]).all()
    with open(os.path.join(s["workdir"], "metrics.jsonl")) as f:
      assert json.loads(f.readlines()[-1])["step"] == STEPS
  heldout = {"image_text": 0, "speech_text": 0}
  for m in glob.glob(os.path.join(workdir, "manifests", "heldout", "*.jsonl")):
    heldout[os.path.basename(m)[:-len(".jsonl")]] = sum(1 for _ in open(m))
  for stage in ("stage1", "stage2", "stage3", "stage4"):
    for kind, n in heldout.items():
      row = summary["learning_evidence"][stage][kind]
      assert row["samples"] == n
      assert np.isfinite([row["real"], row["mismatched"]]).all()


def test_task_metrics_of_stage_4_are_reported_and_printed(demo):
  _, summary, stdout, _ = demo
  report = summary["task_metrics"]
  assert report["stage"] == 4 and report["template_stage"] == 3
  for task, keys in (("captioning", ("cider_d", "bleu_4")), ("asr", ("wer", "cer"))):
    assert 0 < report[task]["samples"] <= 16  # --eval_samples' default caps each task
    assert len(report[task]["examples"]) == report[task]["samples"]
    assert all(np.isfinite(report[task][k]) and report[task][k] >= 0 for k in keys)
  for name in ("text", "image", "speech"):
    assert report["perplexity"][name]["tokens"] > 0
  assert f"CIDEr-D {report['captioning']['cider_d']:7.3f}" in stdout
  assert f"WER {report['asr']['wer']:11.3f}" in stdout


def test_exported_model_loads_in_transformers_with_our_logits(demo):
  import torch
  from transformers import LlamaForCausalLM

  from mio_jax.generate.load import load_model

  _, summary, _, _ = demo
  hf = LlamaForCausalLM.from_pretrained(summary["hf_export"], torch_dtype=torch.float32).eval()
  model, vocab = load_model(summary["stages"][-1]["workdir"])
  ids = np.asarray([vocab.bos] + vocab.encode_text("a red circle on a white background") + [vocab.image_start,
                   vocab.image_base + 5, vocab.image_end], np.int32)
  ours = np.asarray(model(ids[None], np.ones((1, len(ids)), np.int32), np.arange(len(ids))[None]))
  with torch.no_grad():
    theirs = hf(torch.from_numpy(ids[None].astype(np.int64))).logits.numpy()
  np.testing.assert_allclose(theirs, ours, atol=1e-4, rtol=1e-4)


def test_generated_media_are_files_a_person_can_open(demo):
  import soundfile as sf
  from PIL import Image

  _, summary, _, _ = demo
  rows = {r["task"]: r for r in summary["generated"]}
  assert set(rows) == {"caption from image", "transcript from speech", "image from caption", "speech from text"}
  for task in ("caption from image", "transcript from speech"):
    assert isinstance(rows[task]["output"], str) and rows[task]["reference"]
  image = rows["image from caption"]
  grid = np.load(image["codes"])
  with Image.open(image["file"]) as png:
    png.load()
    assert png.format == "PNG" and png.mode == "RGB"
    assert png.size == (grid.shape[1] * 16, grid.shape[0] * 16)  # the tiny VQGAN is f16
  speech = rows["speech from text"]
  codes = np.load(speech["codes"])
  assert codes.shape[0] == 4 and codes.shape[1] > 0  # content + three timbre layers, equal parts
  wave, rate = sf.read(speech["file"])
  assert rate == 16000 and wave.ndim == 1
  assert len(wave) == codes.shape[1] * 320  # hop 320 samples per frame
  assert speech["seconds"] == pytest.approx(len(wave) / 16000, abs=0.01)
