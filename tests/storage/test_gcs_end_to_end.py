"""gs:// end to end on the emulator: tokenize to a bucket, read its shards with the pipeline, export
a checkpoint from the bucket to the bucket, run config save/load. The oracle for each is the same
work done on local disk (which the tokenize, data and export suites check against their own oracles).
"""

import os
import shutil

import numpy as np
import orbax.checkpoint as ocp
import pytest

from mio_jax import storage
from mio_jax.data.shards import ShardReader
import encoder_doubles
from storage_helpers import BUCKET

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
MINI = os.path.join(ROOT, "data", "mini")
KINDS = ("image_text", "speech_text", "video_text", "interleaved", "text", "conversation")


def _job_config(inputs: str, out: str):
  import configs.tokenize as tokenize_config
  c = tokenize_config.get_config("mini")
  c.input, c.output_dir, c.shard_size, c.progress = inputs, out, 4, False
  c.process_index, c.process_count = 0, 1
  return c


def _run(config):
  """The job with the code-from-signal encoder doubles (no weights)."""
  from mio_jax.tokenize import job
  return job.run(config, encoder_doubles.use_double_encoders(config))


def _put(local: str, url: str):
  storage.as_path(url).parent.mkdir(parents=True, exist_ok=True)
  storage.upload(local, url)


@pytest.fixture(scope="module")
def tokenized(tmp_path_factory, gcs_emulator):
  """The same inputs tokenized to local disk and to gs://; one manifest (and its media) read from gs://."""
  import tokenize_helpers as helpers

  tmp = tmp_path_factory.mktemp("tok")
  inputs = helpers.subset_manifests(str(tmp / "in"), {k: 2 for k in KINDS})
  # A manifest with relative media paths, as a local folder and as its copy in the bucket.
  twin = tmp / "twin"
  (twin / "images").mkdir(parents=True)
  shutil.copy(os.path.join(MINI, "images", "0003.png"), twin / "images" / "0003.png")
  (twin / "pairs.jsonl").write_text('{"image": "images/0003.png", "caption": "from the bucket"}\n')
  gs_in = f"gs://{BUCKET}/tok-in"
  _put(str(twin / "images" / "0003.png"), gs_in + "/images/0003.png")
  _put(str(twin / "pairs.jsonl"), gs_in + "/pairs.jsonl")

  local_out, gs_out = str(tmp / "out"), f"gs://{BUCKET}/tok-out"
  local = _run(_job_config(",".join(inputs + [str(twin / "pairs.jsonl")]), local_out))
  remote = _run(_job_config(",".join(inputs + [gs_in + "/pairs.jsonl"]), gs_out))
  rerun = _run(_job_config(",".join(inputs + [gs_in + "/pairs.jsonl"]), gs_out))
  return local_out, gs_out, local, remote, rerun


def _samples(paths):
  out = []
  for path in paths:
    reader = ShardReader(path)  # gs:// paths: ArrayRecord's own GCS reader
    out += [reader[i] for i in range(len(reader))]
    reader.close()
  return out


def _same_sample(a, b):
  assert (a.kind, a.meta) == (b.kind, b.meta)
  assert len(a.parts) == len(b.parts)
  for pa, pb in zip(a.parts, b.parts):
    assert pa.keys() == pb.keys()
    for k in pa:
      assert np.array_equal(pa[k], pb[k]) if k == "codes" else pa[k] == pb[k]


def test_tokenize_to_gs_writes_what_a_local_run_writes(tokenized):
  local_out, gs_out, local, remote, rerun = tokenized
  n = 2 * len(KINDS) + 1
  assert local["job"]["read"] == remote["job"]["read"] == n and remote["job"] == local["job"]
  assert rerun["shards_skipped"] == rerun["shards_owned"] == 4  # committed shards found in the bucket
  names = [p.rsplit("/", 1)[1] for p in storage.glob(gs_out + "/shards/*.array_record")]
  assert names == sorted(f for f in os.listdir(os.path.join(local_out, "shards"))
                        if f.endswith(".array_record"))
  assert all(storage.as_path(f"{gs_out}/shards/{n}.kinds").exists() for n in names)  # kinds index
  for f in ("plan.json", "index.json", "quarantine.jsonl"):
    assert storage.as_path(f"{gs_out}/{f}").exists()
  gs_samples = _samples(storage.glob(gs_out + "/shards/*.array_record"))
  local_samples = _samples(storage.glob(local_out + "/shards/*.array_record"))
  assert len(gs_samples) == n
  for a, b in zip(gs_samples, local_samples):
    _same_sample(a, b)
  assert gs_samples[-1].source == f"gs://{BUCKET}/tok-in/pairs.jsonl:1"
  assert gs_samples[-1].parts[1]["text"] == "from the bucket"


def test_pipeline_reads_shards_from_gs_as_from_local_disk(tokenized):
  from configs.base import stage_config
  from mio_jax.data.pipeline import build_dataset, resolve_shards
  from mio_jax.vocab import Vocabulary

  local_out, gs_out = tokenized[:2]
  batches = []
  for out in (local_out, gs_out):
    cfg = stage_config(2, "smoke")
    cfg.data.seq_len = 1536
    cfg.data.data_dir = out
    cfg.data.mixed_shards = "shards/*.array_record"  # relative to data_dir, a bucket folder too
    assert resolve_shards(cfg.data, "image_text") == storage.glob(out + "/shards/*.array_record")
    vocab = Vocabulary.from_config(dict(text_model=os.path.join(ROOT, "data", "vocab", "mini.model"),
                                        text_size=1000, image_codes=1024, speech_codebook=1024,
                                        speech_layers=4, code_order="image_first"))
    batches.append(next(iter(build_dataset(cfg.data, vocab))))
  assert batches[0].keys() == batches[1].keys()
  for k in batches[0]:
    assert np.array_equal(batches[0][k], batches[1][k]), k


def test_run_config_round_trips_on_gs(gs_dir):
  import ml_collections

  from mio_jax.train.run_config import find_run_config, run_config_dict, save_run_config

  config = ml_collections.ConfigDict({"model": {"vocab_size": 64, "embed_dim": 8, "num_layers": 1},
                                      "vocab": {"text_size": 1000, "text_model": "gs://b/sp.model"}})
  assert save_run_config(gs_dir + "/run", config) == gs_dir + "/run/model_config.json"
  assert find_run_config(gs_dir + "/run/checkpoints/7/params") == run_config_dict(config)
  assert run_config_dict(config)["vocab"]["text_model"] == "gs://b/sp.model"  # not made "absolute"
  assert find_run_config(gs_dir + "/elsewhere/checkpoints/7/params") is None


@pytest.mark.slow  # an export through the emulator; the gs:// job and reads stay
def test_export_from_gs_checkpoint_to_gs_matches_local_export(gs_dir, tmp_path):
  import sys
  sys.path.insert(0, os.path.join(ROOT, "tests", "export"))
  from export_helpers import TINY, TINY_VOCAB, random_params, run_config

  from mio_jax.train.run_config import save_run_config
  from mio_jax.export.to_hf import export
  from mio_jax.train.checkpoint_paths import checkpoint_dir

  params = random_params(TINY, seed=3)
  runs = {"local": str(tmp_path / "run"), "gs": gs_dir + "/run"}
  outs = {"local": str(tmp_path / "hf"), "gs": gs_dir + "/hf"}
  for where, run in runs.items():
    with ocp.CheckpointManager(checkpoint_dir(run), item_names=("params",),
                               options=ocp.CheckpointManagerOptions(create=True)) as manager:
      manager.save(7, args=ocp.args.Composite(params=ocp.args.StandardSave(params)))
      manager.wait_until_finished()
    save_run_config(run, run_config(TINY, TINY_VOCAB))
  # a stale shard from an earlier, larger export in the bucket folder must go
  storage.as_path(outs["gs"]).mkdir(parents=True, exist_ok=True)
  storage.atomic_write_text(outs["gs"] + "/model-00009-of-00009.safetensors", "stale")
  summaries = {w: export(runs[w], outs[w], max_shard_bytes=300_000) for w in runs}
  assert summaries["gs"]["params_dir"] == gs_dir + "/run/checkpoints/7/params"
  assert summaries["gs"]["files"] == summaries["local"]["files"] and len(summaries["gs"]["files"]) > 1
  local_files = sorted(os.listdir(outs["local"]))
  assert sorted(p.name for p in storage.as_path(outs["gs"]).iterdir()) == local_files
  for name in local_files:
    with open(os.path.join(outs["local"], name), "rb") as f:
      assert storage.as_path(f"{outs['gs']}/{name}").read_bytes() == f.read(), name


def test_export_cli_names_a_missing_bucket_in_one_line(gcs_emulator, tmp_path, capsys):
  import sys
  sys.path.insert(0, os.path.join(ROOT, "tests", "export"))
  from export_helpers import launch_module

  with pytest.raises(SystemExit) as e:
    launch_module("export").main(["--checkpoint", "gs://no-such-bucket/run", "--out", str(tmp_path / "hf")])
  assert str(e.value.code) == ("export failed: --checkpoint='gs://no-such-bucket/run': bucket "
                               "gs://no-such-bucket does not exist or is not visible with these credentials")


def test_vocabulary_loads_its_text_model_from_gs(gs_dir):
  from mio_jax.vocab import Vocabulary
  local = os.path.join(ROOT, "data", "vocab", "mini.model")
  with open(local, "rb") as f:
    storage.atomic_write_bytes(gs_dir + "/mini.model", f.read())
  cfg = dict(text_size=1000, image_codes=1024, speech_codebook=1024, speech_layers=4,
             code_order="image_first")
  remote = Vocabulary.from_config(dict(cfg, text_model=gs_dir + "/mini.model"))
  ours = Vocabulary.from_config(dict(cfg, text_model=local))
  text = "a red circle on a light blue background"
  assert remote.encode_text(text) == ours.encode_text(text)
