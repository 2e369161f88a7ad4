"""Shared training config. Each stage file calls `stage_config(stage, size)`.

The tree's keys are declared, and checked before training, in mio_jax/config/training.py: a key
added here must be declared there (an unknown or missing key is a one-line config error).

Sizes (the `:arg` after the config path):
  ""      the full MIO stage on MIO-7B (a pod or multi-node job)
  "1b"    the same recipe on the 1B-class preset (single GPU)
  "40m"   the ~40M preset (CPU benchmarks)
  "smoke" the tiny preset and data, which trains on 2 CPU cores in well under two minutes

Values marked "unverified" are not given by the MIO paper; they are defaults to override.
"""

import ml_collections

from configs import models
from configs.data import data_config

# MIO appendix C: steps per stage (stages 1-2 on 128 GPUs, stages 3-4 on 8).
STAGES = {
    1: dict(name="alignment", steps=24_800),
    2: dict(name="interleaved", steps=12_800),
    3: dict(name="speech_enhanced", steps=32_200),
    4: dict(name="sft", steps=6_000),  # SFT steps: unverified.
}


def stage_config(stage: int, size: str = "") -> ml_collections.ConfigDict:
  if stage not in STAGES:
    raise ValueError(f"stage {stage} is not one of {sorted(STAGES)}")
  if size not in ("", "1b", "40m", "smoke"):
    raise ValueError(f"config size {size!r} is not one of '', '1b', '40m', 'smoke'")
  info = STAGES[stage]
  c = ml_collections.ConfigDict()
  c.stage = stage
  c.stage_name = info["name"]

  c.model = models.get_model({"": "mio_7b", "1b": "1b", "40m": "40m", "smoke": "tiny"}[size])

  # The unified vocabulary: text ids, 6 special tokens, then code ranges (mio_jax.vocab).
  c.vocab = ml_collections.ConfigDict(dict(
      text_model="",  # a SentencePiece .model (Yi's for MIO-7B); required to tokenize text
      # Which code block follows the special tokens: "from_init" takes the layout recorded by the
      # checkpoint the run starts from (config.init_from / previous_run), "image_first" without one
      # (mio_jax/train/code_order.py); or "image_first" | "speech_first" explicitly (MIO-7B's is
      # unpublished: an import reads it from the checkpoint's tokenizer).
      code_order="from_init",
      **models.MIO_7B_VOCAB,
  ))
  if size in ("smoke",):
    # The committed 1000-piece model of the mini corpus and MIO's code blocks:
    # 1000 + 6 + 8192 + 4 * 1024 = 13294 ids.
    c.vocab.update(text_model="data/vocab/mini.model", text_size=1000)
  elif size == "40m":
    c.vocab.update(text_size=8186, image_codes=4096)  # 8186 + 6 + 4096 + 4 * 1024 = 16384

  # Sources, MIO's mixture weights, templates, packing and workers (configs/data.py).
  c.data = data_config(stage, size)
  if size in ("smoke", "40m"):  # seeded learnable sequences: runs before any corpus is tokenized
    c.data.source = "synthetic"

  c.optimizer = ml_collections.ConfigDict(dict(
      # warmup_cosine (MIO) | warmup_stable_decay | constant | linear (mio_jax/train/schedules.py);
      # a run keeps the schedule it started with (WORKDIR/schedule.json) when resumed
      schedule="warmup_cosine",
      peak_lr=3e-5,
      warmup_fraction=0.03,
      final_lr_fraction=0.1,  # the floor (cosine, linear, WSD) as a fraction of peak: unverified
      decay_fraction=0.2,  # warmup_stable_decay: the last 20% of the steps decay to the floor
      b1=0.9,  # unverified
      b2=0.95,  # unverified
      eps=1e-8,
      weight_decay=0.1,  # unverified
      clip_norm=1.0,
      grad_accum_steps=1,  # unverified
      z_loss=0.0,
  ))

  c.train = ml_collections.ConfigDict(dict(
      steps=info["steps"],
      seed=0,
      log_every=10,
      checkpoint_every=500,
      keep_checkpoints=3,
      keep_period=0,  # also keep every K-th step forever (0: only the newest keep_checkpoints)
      on_nonfinite="halt",  # "halt" | "skip" a step whose loss or gradient norm is not finite
      max_consecutive_skips=5,  # with "skip": this many non-finite steps in a row halt the run
      async_checkpointing=True,
      peak_tflops_per_device=0.0,  # 0: look the device up (unknown devices report mfu as null)
      # (first step, count): a jax.profiler trace of those steps in WORKDIR/profile/; count 0: off
      profile_steps=(1, 0),
  ))
  # Held-out evaluation in the loop (mio_jax/train/evaluation.py, docs/metrics.md): eval_loss and
  # eval_loss_<modality> at step 1, every `every` steps and the last step, over the same `batches`
  # batches each time; every 0: off.
  c.eval = ml_collections.ConfigDict(dict(
      every=0,
      batches=4,
      # A glob of held-out token shards (e.g. the demo's tokens/heldout/shards/*.array_record; relative
      # to data.data_dir unless absolute); "" with data.source "synthetic": unseen synthetic rows.
      mixed_shards="",
      seed=0,  # the held-out batches' templating and packing seed
      pairing_samples=16,  # image_text / speech_text samples per kind for the pairing margin; 0: off
      # Samples in TensorBoard (mio_jax/train/eval_samples.py): captions, transcripts, images and
      # speech generated from the first `samples` held-out image_text / speech_text samples of
      # mixed_shards; 0: off. Media decode with these tokenizer dirs; "": their codes, as text.
      samples=0,
      sample_tokens=32,  # max new tokens of a caption or transcript
      image_tokenizer="",
      speech_tokenizer="",
  ))
  # Parameters only, from a previous stage's workdir or step dir (how stage N starts from N-1).
  # With init_from empty and runs_dir set, stage N starts from RUNS_DIR/<previous_run>: stage 1 from
  # the imported text LLM (launch/import_hf.py), stage N from stage N-1 (docs/export.md).
  c.init_from = ""
  c.runs_dir = ""
  c.previous_run = {1: "yi6b_mio", 2: "stage1", 3: "stage2", 4: "stage3"}[stage]

  # data x fsdp x tensor inside a slice/node (ici) and across slices/nodes (dcn); -1 fills.
  # processes_per_node: 0 finds nodes from the devices; N > 0 makes each N consecutive processes one
  # node (for launchers whose hosts XLA cannot tell apart; mio_jax/parallel/topology.py).
  c.mesh = ml_collections.ConfigDict(dict(
      ici=dict(data=1, fsdp=-1, tensor=1),
      dcn=dict(data=-1, fsdp=1, tensor=1),
      processes_per_node=0,
  ))
  c.sharding = ml_collections.ConfigDict(dict(rules="fsdp"))  # a name in RULE_SETS, or a list of pairs

  if size == "1b":
    c.data.update(seq_len=2048, global_batch=8)
    c.model.remat_policy = "none"
  elif size == "40m":
    c.data.update(seq_len=512, global_batch=4)
    c.model.update(dtype="float32", remat_policy="none")
    c.train.update(steps=200, log_every=10, checkpoint_every=100)
  elif size == "smoke":
    c.optimizer.update(peak_lr=3e-3, weight_decay=0.0)
    c.train.update(steps=40, log_every=10, checkpoint_every=20, keep_checkpoints=2)
    c.eval.update(every=20, batches=1)  # held-out synthetic rows (or eval.mixed_shards): ~1 s
  return c
