"""launch/unicode2_evidence.py, shrunk (tiny SigLIP, K = 64, 3 steps a mode), end to end.

Oracles, none of them the script's own code: the tokenizer's utilisation recounted from the held-out
shards read with ShardReader (collections.Counter, math.log); the decoder's from the trained
checkpoint run on one held-out sample at a time, argmax over the image columns of its full logits;
the loss curve against metrics.jsonl; the split against the manifests it wrote.
"""

import collections
import glob
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from mio_jax.parallel.cpu_devices import xla_flags

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
K, STEPS = 64, 3

# Tower, fit, tokenization and three short trainings with their compiles in a subprocess: ~60 s on 2 cores.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("u2e"))
  env = dict(os.environ)
  env["XLA_FLAGS"] = xla_flags(env.get("XLA_FLAGS", ""), None)  # the script sets its own device count
  proc = subprocess.run([sys.executable, os.path.join(ROOT, "launch", "unicode2_evidence.py"),
                         f"--workdir={workdir}", f"--num_clusters={K}", f"--steps={STEPS}",
                         "--siglip_image_size=62", "--siglip_patch_size=14", "--kmeans_passes=2",
                         "--table_every=2"],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  with open(os.path.join(workdir, "unicode2_evidence.json")) as f:
    return workdir, json.load(f), proc.stdout


def _heldout_codes(workdir):
  from mio_jax.data.shards import ShardReader
  codes = []
  for path in sorted(glob.glob(os.path.join(workdir, "tokens", "heldout", "shards", "*.array_record"))):
    reader = ShardReader(path)
    codes += [int(c) for i in range(len(reader)) for p in reader[i].parts if p["type"] == "image"
              for c in np.asarray(p["codes"]).ravel()]
  return codes


def _perplexity(codes):
  counts = collections.Counter(codes)
  return math.exp(-sum(c / len(codes) * math.log(c / len(codes)) for c in counts.values()))


def test_summary_has_every_mode_and_its_numbers(run):
  workdir, s, out = run
  assert (s["num_clusters"], s["steps"], s["codes_per_image"]) == (K, STEPS, 16)
  assert set(s["modes"]) == {"table", "frozen", "cascade"}
  for mode, m in s["modes"].items():
    assert set(m) >= {"pairing", "loss", "decoder_usage", "workdir"}
    assert m["pairing"]["samples"] == s["samples"]["heldout"] and m["pairing"]["margin_stderr"] > 0
    assert m["loss"]["steps"] == STEPS and m["loss"]["finite"] and m["loss"]["tokens_per_second"] > 0
    rows = [json.loads(line) for line in open(os.path.join(m["workdir"], "metrics.jsonl"))]
    losses = {r["step"]: r["loss"] for r in rows if "loss" in r}
    curve = (m["loss"]["first"], m["loss"]["last"], m["loss"]["min"])
    assert curve == (losses[1], losses[STEPS], min(losses.values()))
    assert {int(k) for k in m["loss"]["table"]} == {1, 2, 3}
  assert "UniCode2 at demo scale" in out and "held-out images: " in out


def test_split_is_the_demos_and_the_codebook_saw_only_training_patches(run):
  workdir, s, _ = run
  def rows(split):
    return [json.loads(line) for line in open(os.path.join(workdir, "manifests", split, "image_text.jsonl"))]
  held, train = rows("heldout"), rows("train")
  assert (len(held), len(train)) == (s["samples"]["heldout"], s["samples"]["train"])
  assert len(held) + len(train) == 200 and not {r["image"] for r in held} & {r["image"] for r in train}
  assert s["codebook"]["points"] == 16 * len(train)  # every patch of every training image


def test_tokenizer_utilisation_equals_a_recount_of_the_heldout_shards(run):
  workdir, s, _ = run
  codes = _heldout_codes(workdir)
  u = s["tokenizer_usage"]["heldout"]
  assert u["codes"] == len(codes) == 16 * s["samples"]["heldout"]
  assert u["used"] == len(set(codes)) and u["used_share"] == pytest.approx(len(set(codes)) / K)
  assert u["perplexity"] == pytest.approx(_perplexity(codes), rel=1e-9)


def test_decoder_utilisation_equals_per_sample_argmax_of_the_checkpoint(run):
  import jax.numpy as jnp

  from mio_jax.evaluate.pairing import scored_tokens
  from mio_jax.evaluate.tasks import read_samples
  from mio_jax.generate.load import checkpoint_template_set, load_model

  workdir, s, _ = run
  m = s["modes"]["table"]
  model, vocab = load_model(m["workdir"])
  predicted, hits = [], 0
  for sample in read_samples(s["tokens"]["heldout"]):
    ids, _ = scored_tokens(sample, vocab, 1, checkpoint_template_set(m["workdir"]))
    n = len(ids)
    logits = np.asarray(model(jnp.asarray(ids[None, :-1]), jnp.ones((1, n - 1), jnp.int32),
                              jnp.arange(n - 1)[None]))[0]
    for t in range(1, n):
      if vocab.image_base <= ids[t] < vocab.image_base + K:
        best = int(logits[t - 1, vocab.image_base:vocab.image_base + K].argmax())
        predicted.append(best)
        hits += best == ids[t] - vocab.image_base
  d = m["decoder_usage"]
  assert d["codes"] == len(predicted) == 16 * s["samples"]["heldout"]
  assert d["used"] == len(set(predicted))
  assert d["perplexity"] == pytest.approx(_perplexity(predicted), rel=1e-6)
  assert d["top1"] == pytest.approx(hits / len(predicted))
