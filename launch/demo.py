"""`make demo`: the embedded default, the whole MIO recipe end to end on 2 CPU cores.

  1. tiny tokenizers in the ported formats, trained on the mini corpus (committed under
     data/tokenizers/): a VQGAN (tokenizers_port/vqgan/train_tiny.py) and a SpeechTokenizer whose
     layer-1 codes follow what is said (tokenizers_port/speechtokenizer/train_tiny.py)
  2. the mini corpus (data/mini) split into training and held-out samples, each tokenized to shards
     with launch/tokenize.py's job
  3. stages 1 to 4 (`:smoke` configs) on the training shards, fsdp over 2 simulated devices
     (--devices), each stage starting from the previous one's parameters
  4. learning evidence after every stage: held-out captions and transcripts scored after their own
     media and after another sample's (mio_jax/evaluate/pairing.py); after stage 4, task metrics on
     the held-out split: captioning CIDEr-D / BLEU-4, ASR WER / CER, per-modality perplexity
     (mio_jax/evaluate/tasks.py, as launch/evaluate.py computes them)
  5. the final checkpoint exported to a Hugging Face Llama folder
  6. generation from the final checkpoint: a caption from an image, a transcript from speech, an
     image from a caption and speech from text, the media decoded to PNG and WAV

It prints what it did, where everything is and how long each step took, and writes it all to
WORKDIR/demo_summary.json.
"""

import os
import sys

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the demo is the CPU run, even where libtpu is installed

import json  # noqa: E402

from absl import app, flags  # noqa: E402

flags.DEFINE_string("workdir", "workdirs/demo", "Where everything the demo makes goes.")
# 2 devices: still a sharded step (fsdp all-gathers and reduce-scatters), 26% less time a step than
# 8 on 2 cores (measured: 0.505 vs 0.68 s here); the numbers are the same to the last digit.
flags.DEFINE_integer("devices", 2, "Simulated CPU devices the stages' fsdp axis spans (1: no split).")
flags.DEFINE_integer("steps", 0, "Steps per stage (0: --alignment_steps for stage 1, --later_steps after).")
# Stage 1 is where captions and transcripts meet their media; 40 steps are too few for the tiny
# model to tie them (measured: held-out caption margin 0.02 nats at step 40, 0.17 at step 160).
flags.DEFINE_integer("alignment_steps", 96, "Steps of stage 1 when --steps is 0.")
# Stages 2-4 at 12 steps (was 20) keep make demo under 5 minutes on 2 AVX2 cores; measured against
# 20: caption CIDEr-D 0.420 vs 0.746 (captions now run on past the background colour), ASR WER 0.975
# vs 1.101, every held-out pairing margin still positive.
flags.DEFINE_integer("later_steps", 12, "Steps of stages 2, 3 and 4 when --steps is 0.")
# An image-caption sample is ~280 tokens: rows of 512 hold one (stage 1 rows 59% full), rows of 576
# hold two (94% full), so a step of 576-token rows carries 1.6x the samples for ~1.15x the time.
flags.DEFINE_integer("seq_len", 576, "Packed row length of every stage.")
flags.DEFINE_enum("image_tokenizer", "trained", ["trained", "random"],
                  "trained: the tiny VQGAN fitted to the mini corpus images (data/tokenizers/tiny_vqgan); "
                  "random: a random-weight one (its codes carry little colour, it decodes noise).")
flags.DEFINE_enum("speech_tokenizer", "trained", ["trained", "random"],
                  "trained: the tiny SpeechTokenizer whose layer-1 codes follow what is said "
                  "(data/tokenizers/tiny_speechtokenizer); random: random weights (codes hash the waveform).")
flags.DEFINE_integer("image_holdout_every", 8, "Hold out every N-th image-text pair.")
flags.DEFINE_integer("speech_holdout_every", 5, "Hold out every N-th speech-text pair.")
# Greedy generation of 16 captions and 16 transcripts keeps the task metrics to seconds on 2 cores.
flags.DEFINE_integer("eval_samples", 16, "Held-out samples per task for the task metrics (0: all).")
FLAGS = flags.FLAGS


def timed(log: list, what: str, fn, *args, **kwargs):
  from mio_jax.console import timed_step
  return timed_step(log, "demo", what, fn, *args, **kwargs)


def split_corpus(root: str) -> tuple[list[str], list[str]]:
  """-> (training manifests, held-out manifests). Held-out media appear in no training manifest."""
  from configs.tokenize import KINDS, MINI
  from mio_jax.evaluate.pairing import MEDIA
  from mio_jax.tokenize.holdout import split_corpus as split

  sources = {kind: os.path.join(MINI, f"{kind}.jsonl") for kind in KINDS}
  every = {"image_text": FLAGS.image_holdout_every, "speech_text": FLAGS.speech_holdout_every}
  train, heldout = split(sources, os.path.join(root, "manifests"), {kind: every[kind] for kind in MEDIA})
  return list(train.values()), list(heldout.values())


def tokenize(root: str, log: list) -> dict:
  from configs.tokenize import get_config
  from mio_jax.tokenize import encoders, job, tiny_tokenizers

  tok_dir = os.path.join(root, "tokenizers")

  def make_tokenizers():
    speech = (tiny_tokenizers.trained_tiny_speechtokenizer_dir() if FLAGS.speech_tokenizer == "trained"
              else tiny_tokenizers.make_tiny_speechtokenizer(os.path.join(tok_dir, "speechtokenizer")))
    image = (tiny_tokenizers.trained_tiny_vqgan_dir() if FLAGS.image_tokenizer == "trained"
             else tiny_tokenizers.make_tiny_vqgan(os.path.join(tok_dir, "vqgan")))
    return speech, image

  speech_dir, image_dir = timed(log, "tiny tokenizers", make_tokenizers)
  train, heldout = split_corpus(root)
  out = {"speech_tokenizer": speech_dir, "image_tokenizer": image_dir}
  pair = None
  for split, inputs in (("train", train), ("heldout", heldout)):
    config = get_config("mini")
    config.update(input=",".join(inputs), output_dir=os.path.join(root, "tokens", split),
                  image_tokenizer=image_dir, speech_tokenizer=speech_dir, progress=False)
    pair = pair or encoders.build_encoders(config)  # compiled once, used by both jobs
    summary = timed(log, f"tokenize data/mini ({split})", job.run, config, pair)
    print(f"[demo] {split}: {job.format_summary(summary)}")
    out[split] = os.path.join(config.output_dir, "shards", "*.array_record")
    out[f"{split}_samples"] = summary["job"]["written"]
  return out


def train_stages(root: str, shards: str, heldout: str, log: list) -> list:
  from configs.base import stage_config
  from mio_jax.train.loop import train

  previous, results = "", []
  for stage in (1, 2, 3, 4):
    config = stage_config(stage, "smoke")
    config.data.source = "shards"
    config.data.mixed_shards = shards  # every source reads its own kind from the job's shards
    config.data.seq_len = FLAGS.seq_len
    config.eval.mixed_shards = heldout  # eval_loss per modality in metrics.jsonl as it trains
    # The pairing margins are the demo's learning-evidence step (all held-out pairs, after each
    # stage); scoring 16 pairs of each kind in the loop too cost ~1.4 s an evaluation on 2 cores.
    config.eval.pairing_samples = 0
    config.train.steps = FLAGS.steps or (FLAGS.alignment_steps if stage == 1 else FLAGS.later_steps)
    # Held-out eval and a checkpoint at each stage's first and last steps only: on 2 cores every
    # extra evaluation costs about as much as 3 train steps.
    config.eval.every = config.train.checkpoint_every = config.train.steps
    config.init_from = previous
    workdir = os.path.join(root, f"stage{stage}")
    results.append((stage, config.stage_name, timed(log, f"stage {stage} ({config.stage_name})", train,
                                                    config, workdir)))
    previous = workdir
  return results


def heldout_samples(pattern: str) -> list:
  from mio_jax.evaluate.tasks import read_samples

  return read_samples(pattern)


def learning_evidence(results: list, samples: list) -> dict:
  """Per stage and pair kind: held-out text loss after its own media vs after another's."""
  from mio_jax.evaluate.pairing import pairing_losses
  from mio_jax.generate.load import checkpoint_template_set, load_model

  table = {}
  for stage, _, result in results:
    model, vocab = load_model(result.workdir)
    # Stage 4 (ChatML SFT) starts from stage 3: score it in stage 3's templates.
    for r in pairing_losses(model, vocab, samples, stage=min(stage, 3),
                            template_set=checkpoint_template_set(result.workdir)):
      print(f"[demo] stage {stage}: {r.line()}")
      table.setdefault(f"stage{stage}", {})[r.kind] = {
          "samples": r.samples, "real": round(r.real, 4), "mismatched": round(r.mismatched, 4),
          "margin": round(r.margin, 4), "real_lower_fraction": round(r.wins, 4)}
  return table


def task_metrics(checkpoint: str, samples: list) -> dict:
  """Captioning, ASR and perplexity of the final checkpoint on the held-out split (launch/evaluate.py)."""
  from mio_jax.evaluate.tasks import format_table, task_metrics
  from mio_jax.generate.load import checkpoint_template_set, load_model

  model, vocab = load_model(checkpoint)
  report = task_metrics(model, vocab, samples, stage=4, max_samples=FLAGS.eval_samples, max_new_tokens=24,
                        template_set=checkpoint_template_set(checkpoint))
  for line in format_table(report).splitlines():
    print(f"[demo] stage 4: {line}", flush=True)
  return report


def showcase(checkpoint: str, samples: list, tokens: dict, out_dir: str, metrics: dict) -> list[dict]:
  """The four generation directions from the final checkpoint, media written as PNG and WAV.

  A caption from an image and a transcript from speech are the task metrics' first held-out
  examples (the same sample, prompt and greedy decoding, already generated there); the image from a
  caption and the speech from text are generated here."""
  import numpy as np

  from mio_jax.data.templates import media_and_text, prompt_text
  from mio_jax.generate.complete import complete
  from mio_jax.generate.load import checkpoint_template_set, load_model
  from mio_jax.generate.media_files import MediaWriter
  from mio_jax.generate.prompt import build_prompt

  model, vocab = load_model(checkpoint)
  template_set = checkpoint_template_set(checkpoint)  # prompts in the wording training used
  writer = MediaWriter(tokens["image_tokenizer"], tokens["speech_tokenizer"])
  image = next(s for s in samples if s.kind == "image_text")
  speech = next(s for s in samples if s.kind == "speech_text")
  image_part, caption = media_and_text(image, "image", image.source)
  speech_part, transcript = media_and_text(speech, "speech", speech.source)
  image_codes, speech_codes = image_part["codes"], speech_part["codes"]
  grid = int(image_codes.size)
  frames = int(speech_codes.shape[1])
  os.makedirs(out_dir, exist_ok=True)
  # Stage 4 starts from stage 3: its templates (the paper's set words stage 3's ASR differently).
  task_prompt = lambda name, **fields: prompt_text(name, template_set, stage=3, **fields)  # noqa: E731
  done = []
  for what, task, sample, name in (("caption from image", "captioning", image, "image_caption"),
                                   ("transcript from speech", "asr", speech, "speech_asr")):
    example = metrics[task]["examples"][0]
    assert example["source"] == sample.source, (example["source"], sample.source)
    done.append({"task": what, "held_out_source": sample.source, "prompt": task_prompt(name),
                 "output": example["hypothesis"].strip(), "reference": example["reference"]})
    print(f"[demo] {what}: {done[-1]['output']!r} (reference: {example['reference']!r})", flush=True)
  tasks = [
      ("image from caption", image.source, task_prompt("image_generation", caption=caption),
       dict(max_new_tokens=grid + 2, stop_after_media=True)),
      ("speech from text", speech.source, task_prompt("speech_tts", transcription=transcript),
       dict(max_new_tokens=4 * frames + 2, max_speech_frames=frames, stop_after_media=True)),
  ]
  for k, (what, source, text, kwargs) in enumerate(tasks, start=2):
    # Only the media the prompt names: build_prompt puts media without a placeholder first.
    prompt = build_prompt(vocab, text, image_codes=image_codes if "{image}" in text else None,
                          speech_codes=speech_codes if "{speech}" in text else None)
    _, out = complete(model, vocab, prompt, image_tokens=grid, seed=k, **kwargs)
    row = {"task": what, "held_out_source": source, "prompt": text, "output": out.text.strip()}
    for kind, codes in (("image", out.images), ("speech", out.speech)):
      if codes and codes[0].ndim == 2:  # a complete block: a grid, or equal speech parts
        stem = os.path.join(out_dir, f"{kind}_from_{'caption' if kind == 'image' else 'text'}")
        np.save(stem + ".npy", codes[0])
        row["codes"] = stem + ".npy"
        row.update(writer.write(kind, codes[0], stem))
    print(f"[demo] {what}: {row['output']!r}" + (f" -> {row['file']}" if "file" in row else ""), flush=True)
    done.append(row)
  return done


def main(argv):
  del argv
  from mio_jax.console import setup_console_logging
  from mio_jax.evaluate.tasks import format_table
  from mio_jax.export.to_hf import export
  from mio_jax.parallel.cpu_devices import use_cpu_devices

  setup_console_logging()
  root, log = os.path.abspath(FLAGS.workdir), []
  # A compilation cache in the workdir: stages 2-4 share their step count, so stages 3 and 4 (and
  # every stage's eval step after stage 1's) load the executables stage 2 compiled.
  import jax
  use_cpu_devices(FLAGS.devices)  # before the backend starts
  jax.config.update("jax_compilation_cache_dir", os.path.join(root, "jax_cache"))
  tokens = tokenize(root, log)
  results = train_stages(root, tokens["train"], tokens["heldout"], log)
  samples = heldout_samples(tokens["heldout"])
  evidence = timed(log, "learning evidence (held-out pairing)", learning_evidence, results, samples)
  metrics = timed(log, "task metrics (held-out, stage 4)", task_metrics, results[-1][2].workdir, samples)
  hf_dir = os.path.join(root, "hf_export")
  timed(log, "export to Hugging Face", export, results[-1][2].workdir, hf_dir)
  generated = timed(log, "generate (4 directions)", showcase, results[-1][2].workdir, samples, tokens,
                    os.path.join(root, "generated"), metrics)

  print("\nmake demo: what it did")
  for what, seconds in log:
    print(f"  {what:<38} {seconds:6.0f}s")
  print(f"  {'total':<38} {sum(s for _, s in log):6.0f}s")
  stages = []
  for stage, name, result in results:
    # From metrics.jsonl, not result.losses: a rerun in the same workdir resumes each finished stage
    # at its last step and runs none.
    rows = [json.loads(line) for line in open(os.path.join(result.workdir, "metrics.jsonl"))]
    by_step = {row["step"]: row["loss"] for row in rows}
    losses = [by_step[s] for s in sorted(by_step)]
    stages.append({"stage": stage, "name": name, "first_loss": losses[0], "last_loss": losses[-1],
                   "steps": len(losses), "tokens_per_second": rows[-1]["tokens_per_second"],
                   "workdir": result.workdir})
    print(f"  stage {stage} ({name}): loss {losses[0]:.3f} -> {losses[-1]:.3f} over {len(losses)} steps, "
          f"{rows[-1]['tokens_per_second']:,.0f} tokens/s; {result.workdir}")
  print("  held-out text loss after its own media vs another sample's (nats/token):")
  for stage, kinds in evidence.items():
    for kind, r in kinds.items():
      print(f"    {stage} {kind:<12} real {r['real']:.3f}  mismatched {r['mismatched']:.3f}  "
            f"margin {r['margin']:+.3f}  ({r['real_lower_fraction']:.0%} of {r['samples']} lower)")
  print("  task metrics of stage 4 on the held-out split (docs/evaluation.md):")
  for line in format_table(metrics).splitlines():
    print(f"    {line}")
  print(f"  token shards: {os.path.dirname(tokens['train'])} ({tokens['train_samples']} samples), held out "
        f"{os.path.dirname(tokens['heldout'])} ({tokens['heldout_samples']})")
  print(f"  Hugging Face export (transformers loads it): {hf_dir}")
  for row in generated:
    print(f"  {row['task']}: {row['output'][:70]!r}" + (f" -> {row['file']}" if "file" in row else ""))
  summary = {"steps": [{"what": w, "seconds": round(s, 1)} for w, s in log], "stages": stages,
             "learning_evidence": evidence, "task_metrics": metrics, "tokens": tokens, "hf_export": hf_dir, "generated": generated}
  with open(os.path.join(root, "demo_summary.json"), "w") as f:
    json.dump(summary, f, indent=1)
  print(f"  everything above: {os.path.join(root, 'demo_summary.json')}")


if __name__ == "__main__":
  app.run(main)
