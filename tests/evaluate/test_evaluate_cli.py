"""launch/evaluate.py end to end: a checkpoint in the train loop's layout and held-out shards written by
the tokenization job (code-from-signal encoder doubles) -> the printed table and the JSON report."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from mio_jax.model.transformer import ModelConfig
from mio_jax.train.run_config import save_run_config
from mio_jax.train.state import init_params
from mio_jax.vocab import Vocabulary
from run_helpers import launch_module, run_config, save_our_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The smoke vocabulary: the job's codes (image < 8192, speech < 1024 per layer) fit it.
VOCAB_CFG = dict(text_model=os.path.join(ROOT, "data", "vocab", "mini.model"), text_size=1000,
                 image_codes=8192, speech_codebook=1024, speech_layers=4, code_order="image_first")


cli = launch_module("evaluate")


@pytest.fixture(scope="module")
def heldout(tmp_path_factory):
  """3 image-text and 3 speech-text samples of the mini corpus, tokenized by the job into shards."""
  import configs.tokenize as tokenize_config
  import encoder_doubles
  from mio_jax.tokenize import job
  from tokenize_helpers import subset_manifests
  tmp = tmp_path_factory.mktemp("heldout")
  c = tokenize_config.get_config("mini")
  c.input = ",".join(subset_manifests(str(tmp / "in"), {"image_text": 3, "speech_text": 3}))
  c.output_dir, c.shard_size, c.progress = str(tmp / "tok"), 4, False
  c.process_index, c.process_count = 0, 1
  assert job.run(c, encoder_doubles.use_double_encoders(c))["job"]["written"] == 6
  return str(tmp / "tok" / "shards" / "*.array_record")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  vocab = Vocabulary.from_config(VOCAB_CFG)
  cfg = ModelConfig(vocab_size=vocab.size, embed_dim=32, num_layers=2, num_heads=4, num_kv_heads=2,
                    head_dim=8, mlp_dim=64, dtype="float32", remat_policy="none")
  workdir = str(tmp_path_factory.mktemp("run"))
  save_our_checkpoint(workdir, init_params(cfg, seed=2), step=3)
  save_run_config(workdir, run_config(cfg, VOCAB_CFG))
  return workdir


@pytest.mark.slow  # greedy captions and transcripts (~6 s); test_task_metrics covers the numbers
def test_cli_prints_the_table_and_writes_the_report(heldout, run_dir, tmp_path, capsys):
  from mio_jax.evaluate.tasks import read_samples

  path = tmp_path / "out" / "report.json"
  cli.run(cli.parse_args(["--checkpoint", run_dir, "--data", heldout, "--report", str(path),
                          "--max_new_tokens", "5", "--batch_size", "4", "--max_samples", "2"]))
  printed = capsys.readouterr().out
  with open(path) as f:
    report = json.load(f)
  assert report["checkpoint"] == run_dir and report["data"] == heldout
  assert (report["stage"], report["template_stage"], report["max_new_tokens"]) == (3, 3, 5)
  captions = {s.source: s.parts for s in read_samples(heldout) if s.kind == "image_text"}
  for task, score_keys in (("captioning", ("cider_d", "bleu_4")), ("asr", ("wer", "cer"))):
    section = report[task]
    assert section["samples"] == 2 and len(section["examples"]) == 2  # --max_samples 2 of 3
    for key in score_keys:
      assert math.isfinite(section[key]) and section[key] >= 0
    for row in section["examples"]:
      assert set(row) >= {"source", "reference", "hypothesis"} and row["reference"]
  for row in report["captioning"]["examples"]:  # the reference is the held-out sample's own caption
    assert row["reference"] == next(p["text"] for p in captions[row["source"]] if p["type"] == "text").strip()
  assert 0 <= report["asr"]["wer"] and report["asr"]["reference_words"] > 0
  perplexity = report["perplexity"]
  assert perplexity["samples"] == 4
  for name in ("text", "image", "speech", "all"):
    assert perplexity[name]["tokens"] > 0
    assert perplexity[name]["perplexity"] == pytest.approx(np.exp(perplexity[name]["loss"]))
    # An untrained model is near uniform over the 13294 ids: perplexity of that order.
    assert 1000 < perplexity[name]["perplexity"] < 60000
  assert f"CIDEr-D {report['captioning']['cider_d']:7.3f}" in printed
  assert f"WER {report['asr']['wer']:11.3f}" in printed
  assert f"speech {perplexity['speech']['perplexity']:.2f}" in printed
  assert f"wrote {path}" in printed


def test_cli_refuses_data_that_matches_nothing_in_one_line(run_dir, tmp_path):
  proc = subprocess.run([sys.executable, os.path.join(ROOT, "launch", "evaluate.py"), "--checkpoint", run_dir,
                         "--data", str(tmp_path / "none" / "*.array_record")],
                        capture_output=True, text=True, timeout=300, cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines()[-1] == f"evaluate: --data={tmp_path / 'none' / '*.array_record'}: no shard matches"
