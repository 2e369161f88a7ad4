"""UniCode2 at demo scale (issue #21 item 5, docs/unicode2.md "Evidence at demo scale"): one frozen
codebook, one tokenization of the mini corpus, stage 1 trained three ways on it.

  1. a random SigLIP tower (the port's tiny preset at --siglip_image_size / --siglip_patch_size)
  2. every patch of the training images embedded (mio_jax/codebook/embed_patches.py), k-means to
     --num_clusters centroids (mio_jax/codebook/fit.py), the UniCode2 tokenizer folder of the two
  3. data/mini's image-text pairs split as launch/demo.py splits them (every 8th held out) and
     tokenized with that folder
  4. stage 1 (`:smoke`, image-text only) once per --modes entry, same seed, steps and data:
     "table" (a trainable K-entry embedding table), "frozen" (frozen centroids through a trainable
     map), "cascade" (frozen centroids, projector MLP plus a zero-initialised residual table)
  5. per mode: held-out caption pairing margin (mio_jax/evaluate/pairing.py), loss curve from
     metrics.jsonl, tokens/s, and image-id utilisation: the tokenizer's on held-out images (the same
     for every mode) and the decoder's own (mio_jax/evaluate/code_usage.py)

  python launch/unicode2_evidence.py --workdir=workdirs/unicode2_evidence

Everything lands in WORKDIR; the numbers in WORKDIR/unicode2_evidence.json. A rerun in the same
workdir reuses each finished step (the embeddings, the fit, the shards, each finished training run).
"""

import os
import sys

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("JAX_PLATFORMS", "cpu")  # a CPU run, as the demo, even where libtpu is installed

import glob  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402

from absl import app, flags  # noqa: E402

MODES = ("table", "frozen", "cascade")
flags.DEFINE_string("workdir", "workdirs/unicode2_evidence", "Where everything goes.")
flags.DEFINE_integer("num_clusters", 4096, "K: codebook entries (image ids).")
flags.DEFINE_integer("steps", 96, "Stage 1 steps per mode (the demo's --alignment_steps).")
flags.DEFINE_list("modes", list(MODES), f"Image-id embeddings to train, of {MODES}.")
flags.DEFINE_enum("image_head", "separate", ["separate", "tied"],
                  "config.model.image_head of the frozen and cascade modes.")
# 224 px / patch 16 (a 14 x 14 grid, SigLIP B/16's) gives 196 codes per image, near the demo VQGAN's
# 256, and 180 x 196 = 35,280 training patches: 8.6 per centroid at K = 4096. Width 64 keeps the
# tower seconds on 2 cores.
flags.DEFINE_integer("siglip_image_size", 224, "Random SigLIP tower's image size.")
flags.DEFINE_integer("siglip_patch_size", 16, "Random SigLIP tower's patch size.")
flags.DEFINE_integer("siglip_width", 64, "Random SigLIP tower's hidden size.")
flags.DEFINE_integer("kmeans_passes", 10, "Lloyd passes of the k-means fit.")
flags.DEFINE_integer("image_holdout_every", 8, "Hold out every N-th image-text pair (the demo's).")
flags.DEFINE_integer("seq_len", 576, "Packed row length (the demo's).")
flags.DEFINE_integer("devices", 2, "Simulated CPU devices (the demo's).")
flags.DEFINE_integer("table_every", 16, "Steps between rows of the printed loss table.")
FLAGS = flags.FLAGS


def log_time(log: list, what: str, fn, *args, **kwargs):
  from mio_jax.console import timed_step
  return timed_step(log, "unicode2", what, fn, *args, **kwargs)


def codebook(root: str, train_manifest: str) -> dict:
  """The random tower, the training images' patch embeddings, the k-means fit, the tokenizer folder."""
  import numpy as np

  import configs.codebook
  from mio_jax.codebook import tokenizer as u2
  from mio_jax.codebook.embed_patches import EmbedOptions, embed_patches
  from mio_jax.codebook.fit import fit
  from mio_jax.tokenize.encoders import local_mesh
  from mio_jax.tokenize.tiny_tokenizers import make_tiny_siglip
  from tokenizers_port import siglip

  out = {k: os.path.join(root, k) for k in ("siglip", "embeddings", "fit", "tokenizer")}
  if not os.path.exists(os.path.join(out["siglip"], "config.json")):
    make_tiny_siglip(out["siglip"], image_size=FLAGS.siglip_image_size, patch_size=FLAGS.siglip_patch_size,
                     hidden_size=FLAGS.siglip_width, intermediate_size=4 * FLAGS.siglip_width)
  index = os.path.join(out["embeddings"], "index-00000-of-00001.json")
  if not os.path.exists(index):
    encoder = siglip.load(out["siglip"], mesh=local_mesh(8))
    embed_patches(encoder, train_manifest, out["embeddings"], EmbedOptions(patches_per_image=0))
  points = json.load(open(index))["rows"]
  if not os.path.exists(os.path.join(out["fit"], "codebook.npy")):
    c = configs.codebook.get_config("tiny")
    # Lloyd (whole-pass means) and a random-sample start: greedy k-means++ over thousands of
    # centres is minutes of sequential draws on 2 cores; re-seeding fills empty clusters.
    c.update(num_clusters=FLAGS.num_clusters, algorithm="lloyd", init="random", init_points=points,
             passes=FLAGS.kmeans_passes, global_batch=4096, checkpoint_every=0, log_every=1000)
    c.data.embeddings = out["embeddings"]
    fit(c, out["fit"])
  if not os.path.exists(os.path.join(out["tokenizer"], "config.json")):
    u2.make_tokenizer(out["siglip"], os.path.join(out["fit"], "codebook.npy"), out["tokenizer"],
                      block_size=1024)
  fit_metrics = [json.loads(line) for line in open(os.path.join(out["fit"], "metrics.jsonl"))]
  last_pass = [r for r in fit_metrics if "pass_inertia" in r][-1]
  k, d = np.load(os.path.join(out["fit"], "codebook.npy"), mmap_mode="r").shape
  if k != FLAGS.num_clusters:  # a rerun reuses the workdir's parts: they must be this run's
    sys.exit(f"error: {out['fit']} holds a K = {k} codebook, not --num_clusters={FLAGS.num_clusters}: "
             "use another --workdir")
  return dict(out, points=points, dim=int(d), points_per_centroid=round(points / FLAGS.num_clusters, 2),
              fit_last_pass={k: last_pass[k] for k in ("pass_inertia", "used_share", "usage_perplexity")})


def tokenize(root: str, tokenizer: str, manifests: dict) -> dict:
  from configs.tokenize import get_config
  from mio_jax.tokenize import encoders, job

  out, pair = {}, None
  for split, manifest in manifests.items():
    config = get_config("image_text")
    config.update(input=manifest, output_dir=os.path.join(root, "tokens", split), image_tokenizer=tokenizer,
                  speech_tokenizer="", progress=False)
    pattern = os.path.join(config.output_dir, "shards", "*.array_record")
    if not glob.glob(pattern):
      pair = pair or encoders.build_encoders(config)
      print(f"[unicode2] {split}: {job.format_summary(job.run(config, pair))}")
    out[split] = pattern
  return out


def stage1_config(mode: str, tokens: dict, codes_per_image: int, codebook_npy: str, dim: int):
  from configs.base import stage_config
  from mio_jax.vocab import vocab_size_from_config

  c = stage_config(1, "smoke")
  c.vocab.image_codes = FLAGS.num_clusters
  c.model.vocab_size = vocab_size_from_config(c.vocab)
  c.data.image_tokens = codes_per_image
  for name in c.data.sources:  # image-text pairs only: the one kind this tokenizer changes
    c.data.sources[name].weight = 1.0 if name == "image_text" else 0.0
  c.data.update(source="shards", mixed_shards=tokens["train"], seq_len=FLAGS.seq_len)
  c.eval.update(mixed_shards=tokens["heldout"], pairing_samples=0)
  c.train.update(steps=FLAGS.steps, log_every=1, checkpoint_every=FLAGS.steps)
  c.eval.every = FLAGS.steps
  c.model.update(image_embedding=mode, image_head=FLAGS.image_head)  # docs/unicode2.md
  if mode != "table":
    c.model.update(image_codebook=codebook_npy, image_code_dim=dim)
  return c


def loss_curve(workdir: str) -> dict:
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  by_step = {r["step"]: r for r in rows if "loss" in r}
  steps = sorted(by_step)
  losses = [by_step[s]["loss"] for s in steps]
  every = [s for s in steps if s == 1 or s % FLAGS.table_every == 0 or s == steps[-1]]
  evals = {r["step"]: {k: v for k, v in r.items() if k.startswith("eval_loss")}
           for r in rows if "eval_loss" in r}
  tps = [by_step[s]["tokens_per_second"] for s in steps[1:] if "tokens_per_second" in by_step[s]]
  return {"first": losses[0], "last": losses[-1], "min": min(losses), "steps": len(losses),
          "finite": all(math.isfinite(x) for x in losses),
          "table": {s: round(by_step[s]["loss"], 4) for s in every},
          "eval_loss": evals, "tokens_per_second": round(sorted(tps)[len(tps) // 2], 1) if tps else None}


def evaluate(workdir: str, samples: list) -> dict:
  from mio_jax.evaluate.code_usage import predicted_image_codes, usage
  from mio_jax.evaluate.pairing import pairing_losses
  from mio_jax.generate.load import checkpoint_template_set, load_model

  model, vocab = load_model(workdir)
  template_set = checkpoint_template_set(workdir)
  (r,) = pairing_losses(model, vocab, samples, stage=1, template_set=template_set)
  pred = predicted_image_codes(model, vocab, samples, stage=1, template_set=template_set)
  return {"pairing": {"samples": r.samples, "real": round(r.real, 4), "mismatched": round(r.mismatched, 4),
                      "margin": round(r.margin, 4),
                      "margin_stderr": round(r.margin_stderr, 4),
                      "real_lower_fraction": round(r.wins, 4)},
          "decoder_usage": dict(usage(pred["predicted"], vocab.image_codes),
                                top1=float((pred["predicted"] == pred["target"]).mean()),
                                image_code_loss=float(pred["loss"].mean()))}


def report(summary: dict) -> None:
  t, c, len_h = summary["tokenizer_usage"], summary["codebook"], summary["samples"]["heldout"]
  print(f"\nUniCode2 at demo scale: K={summary['num_clusters']}, {c['points']} training patches "
        f"({c['points_per_centroid']} per centroid), {summary['codes_per_image']} codes per image")
  for split, what in (("heldout", f"{len_h} held-out"), ("train_subset", f"{len_h} training"),
                      ("train", "all training")):
    u = t[split]
    print(f"  tokenizer ids on {what} images: {u['used']}/{summary['num_clusters']} used "
          f"({u['used_share']:.1%}, at most {u['max_used_share']:.1%}), perplexity {u['perplexity']:.0f}")
  print(f"  {'mode':<8} {'margin':>14} {'real':>6} {'loss first/last/min':>20} {'eval':>6} {'img loss':>8} "
        f"{'pred ids':>8} {'pred ppl':>8} {'tok/s':>7}")
  for mode, m in summary["modes"].items():
    lc, p, d = m["loss"], m["pairing"], m["decoder_usage"]
    ev = list(lc["eval_loss"].values())[-1]["eval_loss"] if lc["eval_loss"] else float("nan")
    print(f"  {mode:<8} {p['margin']:+7.3f}±{p['margin_stderr']:.3f} {p['real']:6.3f} "
          f"{lc['first']:6.3f}/{lc['last']:.3f}/{lc['min']:.3f} "
          f"{ev:6.3f} {d['image_code_loss']:8.3f} {d['used_share']:8.1%} {d['perplexity']:8.0f} "
          f"{lc['tokens_per_second']:7.0f}")
  steps = sorted({s for m in summary["modes"].values() if "loss" in m for s in m["loss"]["table"]})
  print("  training loss by step: " + "  ".join(f"{s:>6}" for s in steps))
  for mode, m in summary["modes"].items():
    if "loss" in m:
      print(f"  {mode:<22} " + "  ".join(f"{m['loss']['table'].get(s, float('nan')):6.3f}" for s in steps))


def main(argv):
  del argv
  import jax

  from configs.tokenize import KINDS, MINI
  from mio_jax.console import setup_console_logging
  from mio_jax.evaluate.code_usage import image_codes, usage
  from mio_jax.evaluate.tasks import read_samples
  from mio_jax.parallel.cpu_devices import use_cpu_devices
  from mio_jax.tokenize.holdout import split_corpus
  from mio_jax.train.loop import train

  if set(FLAGS.modes) - set(MODES):
    raise app.UsageError(f"--modes={FLAGS.modes}: each one of {MODES}")
  setup_console_logging()
  root, log = os.path.abspath(FLAGS.workdir), []
  use_cpu_devices(FLAGS.devices)  # before the backend starts
  jax.config.update("jax_compilation_cache_dir", os.path.join(root, "jax_cache"))
  # The demo's split: the other manifests train whole and keep their media out of the held-out set.
  sources = {kind: os.path.join(MINI, f"{kind}.jsonl") for kind in KINDS}
  train_m, heldout_m = split_corpus(sources, os.path.join(root, "manifests"),
                                    {"image_text": FLAGS.image_holdout_every})
  manifests = {"train": train_m["image_text"], "heldout": heldout_m["image_text"]}
  book = log_time(log, "SigLIP, patch embeddings, k-means, tokenizer", codebook, root, manifests["train"])
  tokens = log_time(log, "tokenize image-text pairs", tokenize, root, book["tokenizer"], manifests)
  heldout, training = read_samples(tokens["heldout"]), read_samples(tokens["train"])
  codes_per_image = int(image_codes(heldout[:1]).size)
  summary = {"num_clusters": FLAGS.num_clusters, "steps": FLAGS.steps, "codes_per_image": codes_per_image,
             "siglip": {"image_size": FLAGS.siglip_image_size, "patch_size": FLAGS.siglip_patch_size,
                        "width": FLAGS.siglip_width, "weights": "random"},
             "samples": {"train": len(training), "heldout": len(heldout)}, "codebook": book, "tokens": tokens,
             "tokenizer_usage": {"heldout": usage(image_codes(heldout), FLAGS.num_clusters),
                                 "train": usage(image_codes(training), FLAGS.num_clusters),
                                 # as many training images as held out: what the held-out count is
                                 # to be read against (fewer images use fewer ids whatever the fit)
                                 "train_subset": usage(image_codes(training[:len(heldout)]),
                                                       FLAGS.num_clusters)},
             "modes": {}}
  codebook_npy = os.path.join(book["fit"], "codebook.npy")
  for mode in FLAGS.modes:
    config = stage1_config(mode, tokens, codes_per_image, codebook_npy, book["dim"])
    workdir = os.path.join(root, f"stage1_{mode}" + ("_tied" if FLAGS.image_head == "tied" else ""))
    log_time(log, f"stage 1 ({mode})", train, config, workdir)
    result = log_time(log, f"evaluate ({mode})", evaluate, workdir, heldout)
    summary["modes"][mode] = dict(result, loss=loss_curve(workdir), workdir=workdir)
  summary["seconds"] = {what: round(seconds, 1) for what, seconds in log}
  report(summary)
  path = os.path.join(root, "unicode2_evidence.json")
  with open(path, "w") as f:
    json.dump(summary, f, indent=1)
  print(f"  everything above: {path}")


if __name__ == "__main__":
  app.run(main)
