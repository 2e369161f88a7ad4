"""The tokenization job: read inputs, split shards over processes, decode in threads, encode in
batches, commit each shard atomically, and account for every sample read.

Output folder layout:
  plan.json                           the plan every process and rerun must agree with
  shards/shard-NNNNN-of-MMMMM.array_record
  shards/shard-NNNNN-of-MMMMM.array_record.kinds   each record's kind (mio_jax/data/kinds_index.py)
  quarantine/shard-NNNNN.jsonl        that shard's quarantined samples
  index/shard-NNNNN.json              the shard's commit record (counts, size, sha256)
  index.json, quarantine.jsonl        merged by whichever process sees every shard committed

A shard is committed in four atomic writes: quarantine file, kinds index, shard file, index record.
The index record is the commit point: a rerun skips shards that have one and redoes the rest from
scratch, and since a shard's bytes depend only on its samples, a job killed anywhere and rerun ends
with the same files.

The output folder may be on gs:// (every path goes through mio_jax.storage / etils.epath). ArrayRecord
writes only local files (its writer opens a POSIX file; only its reader has a GCS client), so a
shard for gs:// is written to a local temporary file and uploaded as one object, which is atomic.
"""

import collections
import concurrent.futures as futures
import dataclasses
import hashlib
import json
import os
import tempfile
import time

from tqdm import tqdm

from mio_jax import storage
from mio_jax.config.keys import ConfigError
from mio_jax.config.tokenize_job import check_tokenize_config_keys
from mio_jax.tokenize import build, encoders, manifests, media, plan as plan_lib, quarantine

# The commit steps run() reports to its on_event callback, as on_event(step, n) for the n-th shard
# this run commits (1-based); the tests kill the process at each of them.
COMMIT_STEPS = ("quarantine_committed", "shard_half_written", "shard_tmp_written", "shard_committed",
                "index_committed")


def media_config(config, image_encoder) -> media.MediaConfig:
  """config.media with the image tokenizer's side and resize policy, and its video defaults where
  the config says "auto" (pair_video_mode) or 0 (num_frames): VQGAN 4 segment centres, SEED-2 MIO's
  extract_frames rule with 10 (encoders.VQGAN_VIDEO / SEED2_VIDEO)."""
  values = dict(config.media)  # its keys checked by check_tokenize_config_keys
  video = image_encoder.video_defaults if image_encoder is not None else encoders.VQGAN_VIDEO
  if values.get("pair_video_mode") == "auto":
    values["pair_video_mode"] = video["pair_video_mode"]
  if values.get("num_frames") == 0:
    values["num_frames"] = video["num_frames"]
  if image_encoder is not None:
    values["image_size"] = image_encoder.image_size
    values["image_resize"] = image_encoder.image_resize
  for key in ("pair_video_mode", "interleaved_video_mode"):
    if values.get(key, "uniform") not in media.VIDEO_MODES:
      raise ConfigError(f"config.media.{key}={values[key]!r} is not one of "
                        f"{', '.join(('auto',) + media.VIDEO_MODES)}")
  if values.get("num_frames", 1) < 1:
    raise ConfigError(f"config.media.num_frames={values['num_frames']} must be 0 (the image "
                      "tokenizer's) or a frame count")
  return media.MediaConfig(**values)


def plan_settings(config, cfg: media.MediaConfig) -> dict:
  """The config that changes shard contents, as plan.json records it. The default image_resize is
  left out so plans written before the key existed (VQGAN jobs) still match on a rerun."""
  recorded = dataclasses.asdict(cfg)
  if recorded["image_resize"] == "center_crop":
    del recorded["image_resize"]
  return {"media": recorded, "speech_pad_multiple": config.speech_pad_multiple,
          "image_tokenizer": config.image_tokenizer, "speech_tokenizer": config.speech_tokenizer}


def process_split(config) -> tuple[int, int]:
  """Flags when given (>= 0), else the JAX distributed runtime's view."""
  if config.process_count > 0:
    return config.process_index, config.process_count
  import jax
  return jax.process_index(), jax.process_count()


def _decode(raw, cfg):
  try:
    return media.decode_sample(raw, cfg)
  except media.MediaError as e:
    return e


def _sha256(path: str) -> str:
  """Of a local file."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def is_committed(out: str, plan, shard: int) -> bool:
  root = storage.as_path(out)
  rec_path = root / "index" / f"shard-{shard:05d}.json"
  if not rec_path.exists():
    return False
  rec = json.loads(rec_path.read_text(encoding="utf-8"))
  path = root / "shards" / plan.shard_file(shard)
  return path.exists() and path.stat().length == rec["bytes"]


def commit_shard(out: str, plan, shard: int, samples, quarantined, n_run: int, on_event=None) -> dict:
  from mio_jax.data import kinds_index
  from mio_jax.data.shards import ShardWriter

  event = (lambda step: on_event(step, n_run)) if on_event else (lambda step: None)
  root = storage.as_path(out)
  quarantine.atomic_write_jsonl(root / "quarantine" / f"shard-{shard:05d}.jsonl", quarantined)
  event("quarantine_committed")
  path = os.fspath(root / "shards" / plan.shard_file(shard))
  # Before the shard: a committed shard always has its kinds index (the pipeline's kind filter).
  kinds_index.write(path, [s.kind for s in samples])
  remote = storage.is_remote(path)
  # Beside the shard (renamed into place), or for gs:// in the local temp folder (then uploaded).
  tmp = storage.temp_path(os.path.join(tempfile.gettempdir(), plan.shard_file(shard)) if remote else path)
  with ShardWriter(tmp) as writer:
    for k, s in enumerate(samples):
      writer.write(s)
      if k == len(samples) // 2:
        event("shard_half_written")
  event("shard_tmp_written")
  size, digest = os.path.getsize(tmp), _sha256(tmp)
  if remote:
    try:
      storage.upload(tmp, path)
    finally:
      os.remove(tmp)
  else:
    storage.commit(tmp, path)
  event("shard_committed")
  rng = plan.shard_range(shard)
  rec = {"shard": shard, "file": plan.shard_file(shard), "first": rng.start, "read": len(rng),
         "written": len(samples), "quarantined": len(quarantined), "bytes": size,
         "sha256": digest, "kinds": dict(sorted(collections.Counter(s.kind for s in samples).items()))}
  if rec["read"] != rec["written"] + rec["quarantined"]:
    raise AssertionError(f"shard {shard}: read {rec['read']} != written {rec['written']} + "
                         f"quarantined {rec['quarantined']}")
  storage.atomic_write_text(root / "index" / f"shard-{shard:05d}.json",
                               json.dumps(rec, sort_keys=True) + "\n")
  event("index_committed")
  return rec


def finalize(out: str, plan, image_codes: dict | None = None) -> dict | None:
  """Merge index and quarantine once every shard is committed; None while some are missing.
  image_codes (encoders.image_code_record) goes into index.json for training's config check."""
  root = storage.as_path(out)
  recs = []
  for shard in range(plan.num_shards):
    if not is_committed(out, plan, shard):
      return None
    recs.append(json.loads((root / "index" / f"shard-{shard:05d}.json").read_text(encoding="utf-8")))
  read = sum(r["read"] for r in recs)
  written = sum(r["written"] for r in recs)
  held = sum(r["quarantined"] for r in recs)
  if read != plan.num_samples or read != written + held:
    raise AssertionError(f"{out}: accounting broken: planned {plan.num_samples}, read {read}, "
                         f"written {written}, quarantined {held}")
  rows = []
  for shard in range(plan.num_shards):
    rows += quarantine.read_jsonl(root / "quarantine" / f"shard-{shard:05d}.jsonl")
  quarantine.atomic_write_jsonl(root / "quarantine.jsonl", rows)
  index = {"num_samples": read, "written": written, "quarantined": held, "shards": recs,
           "image_codes": image_codes}
  storage.atomic_write_text(root / "index.json", json.dumps(index, indent=1, sort_keys=True) + "\n")
  return {"read": read, "written": written, "quarantined": held,
          "reasons": dict(collections.Counter(r["category"] for r in rows).most_common())}


def remove_stale_temporaries(out: str, plan, shards: list[int]):
  """Temporary files a killed run of *this* process's shards left behind (others' are not ours).

  Local output only: for gs:// output the temporaries live in the local temp folder, and a killed
  run's objects are never partial (one upload each).
  """
  if storage.is_remote(out):
    return
  for sub, name in (("shards", plan.shard_file), ("quarantine", lambda s: f"shard-{s:05d}.jsonl"),
                    ("index", lambda s: f"shard-{s:05d}.json")):
    names = [name(s) for s in shards]
    for f in os.listdir(os.path.join(out, sub)):
      if any(storage.is_temp_of(f, n) for n in names):
        os.remove(os.path.join(out, sub, f))


def run(config, encoder_pair=None, on_event=None) -> dict:
  """Run (or resume) the job this process owns a part of; returns a summary dict.

  encoder_pair: (image, speech) encoders to use instead of building them from the config (lets
  one Python process run several jobs without recompiling, or tests pass doubles).
  on_event: called as on_event(step, n) after each of COMMIT_STEPS of the n-th shard this run
  commits (tests use it to kill the process mid-commit).
  """
  t0 = time.perf_counter()
  check_tokenize_config_keys(config)
  if not config.output_dir:
    raise ValueError("config key output_dir is empty")
  storage.check_reachable(config.output_dir, "output_dir")  # before any work: fail fast, in one line
  samples = manifests.read_inputs(config.input, config.tfds_data_dir or None)
  image_encoder, speech_encoder = encoder_pair or encoders.build_encoders(config)
  cfg = media_config(config, image_encoder)
  plan = plan_lib.make_plan(samples, config.shard_size, plan_settings(config, cfg))
  out = storage.as_str(config.output_dir)
  for sub in ("shards", "quarantine", "index"):
    (storage.as_path(out) / sub).mkdir(parents=True, exist_ok=True)
  plan_lib.check_or_record(plan, out)
  index, count = process_split(config)
  mine = plan_lib.owned_shards(plan.num_shards, index, count)
  todo = [s for s in mine if not is_committed(out, plan, s)]
  remove_stale_temporaries(out, plan, todo)

  total = sum(len(plan.shard_range(s)) for s in mine)
  skipped = total - sum(len(plan.shard_range(s)) for s in todo)
  bar = tqdm(total=total, initial=skipped, unit="sample", disable=not config.progress,
             desc=f"tokenize p{index}/{count}", dynamic_ncols=True)
  stats = collections.Counter()
  with futures.ThreadPoolExecutor(max(1, config.num_workers)) as pool:
    # Decoding runs prefetch_shards shards ahead of encoding, so the encoders rarely wait.
    pending = collections.deque()

    def submit(shard):
      rng = plan.shard_range(shard)
      pending.append((shard, [(i, samples[i], pool.submit(_decode, samples[i], cfg)) for i in rng]))

    queue = collections.deque(todo)
    while queue and len(pending) <= config.prefetch_shards:
      submit(queue.popleft())
    n_run = 0
    while pending:
      shard, items = pending.popleft()
      if queue:
        submit(queue.popleft())

      def arrivals(items=items):  # lazily, in sample order: encoding starts as samples arrive
        for i, raw, fut in items:
          yield i, raw, fut.result()
          bar.update(1)

      shard_samples, held = build.build_shard(shard, arrivals(), image_encoder, speech_encoder,
                                              config.image_batch_size, config.speech_batch_size)
      n_run += 1
      rec = commit_shard(out, plan, shard, shard_samples, held, n_run, on_event)
      stats.update(read=rec["read"], written=rec["written"], quarantined=rec["quarantined"])
      bar.set_postfix(written=stats["written"], quarantined=stats["quarantined"])
  bar.close()

  seconds = time.perf_counter() - t0
  summary = {"process": f"{index}/{count}", "process_count": count, "shards_owned": len(mine), "shards_skipped": len(mine) - len(todo),
             "read_this_run": stats["read"], "written_this_run": stats["written"],
             "quarantined_this_run": stats["quarantined"], "seconds": round(seconds, 2),
             "samples_per_s": round(stats["read"] / seconds, 2) if seconds else 0.0}
  job = finalize(out, plan, encoders.image_code_record(image_encoder))
  if job is not None:
    summary["job"] = job
  return summary


def format_summary(summary: dict) -> str:
  lines = [f"process {summary['process']}: {summary['shards_owned']} shards owned, "
           f"{summary['shards_skipped']} already done; this run read {summary['read_this_run']}, "
           f"wrote {summary['written_this_run']}, quarantined {summary['quarantined_this_run']} "
           f"in {summary['seconds']} s ({summary['samples_per_s']} samples/s)"]
  job = summary.get("job")
  if job is None:
    lines.append("job: other processes' shards are not all committed yet")
  else:
    lines.append(f"job: read {job['read']} = written {job['written']} + quarantined {job['quarantined']} (checked)")
    lines += [f"  quarantined for {reason}: {n}" for reason, n in job["reasons"].items()]
  return "\n".join(lines)
