"""Planted bad inputs each land in quarantine with their source and reason; the job goes on."""

import json
import os

import pytest

from mio_jax.data.shards import ShardReader
from mio_jax.tokenize import job, plan
import tokenize_helpers as helpers


def test_planted_bad_inputs_are_quarantined_and_counted(tmp_path):
  spec, expected, n_good = helpers.plant_bad_inputs(str(tmp_path / "in"))
  c = helpers.job_config(spec, tmp_path / "out", shard_size=4)
  c.media.resample = False  # the 8 kHz clip is then unsupported
  summary = job.run(c, helpers.shared_encoders())

  total = n_good + len(expected)
  assert summary["job"]["read"] == total
  assert summary["job"]["written"] == n_good and summary["job"]["quarantined"] == len(expected)
  with open(tmp_path / "out" / "quarantine.jsonl", encoding="utf-8") as f:
    rows = [json.loads(line) for line in f]
  assert {r["source"]: r["category"] for r in rows} == expected
  manifest_level = ("manifest line is not valid UTF-8", "bad row", "invalid JSON")
  for r in rows:  # one line naming the file that is bad (media or sidecar), or the manifest line
    assert r["reason"] and "\n" not in r["reason"]
    if r["category"] not in manifest_level:
      assert str(tmp_path / "in") in r["reason"], r

  written = []
  for rec in json.load(open(tmp_path / "out" / "index.json"))["shards"]:
    reader = ShardReader(str(tmp_path / "out" / "shards" / rec["file"]))
    assert len(reader) == rec["written"] and rec["read"] == rec["written"] + rec["quarantined"]
    written += [reader[i].source for i in range(len(reader))]
  assert len(written) == n_good and not set(written) & set(expected)


def test_resampling_on_keeps_the_8k_clip(tmp_path):
  spec, expected, n_good = helpers.plant_bad_inputs(str(tmp_path / "in"))
  summary = job.run(helpers.job_config(spec, tmp_path / "out", shard_size=32), helpers.shared_encoders())
  assert summary["job"]["written"] == n_good + 1
  assert "unsupported sample rate" not in summary["job"]["reasons"]


def test_rerun_with_another_plan_is_refused(tmp_path):
  spec = ",".join(helpers.subset_manifests(str(tmp_path / "in"), {"text": 5}))
  job.run(helpers.job_config(spec, tmp_path / "out", shard_size=2), helpers.shared_encoders())
  with pytest.raises(ValueError, match=r"different job \(differs in \['num_shards', 'shard_size'\]\)"):
    job.run(helpers.job_config(spec, tmp_path / "out", shard_size=3), helpers.shared_encoders())
  assert plan.PLAN_FILE in os.listdir(tmp_path / "out")
