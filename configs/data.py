"""Data config per training stage: sources and mixture weights, templates, packing, workers.

`data_config(stage, size)` returns config.data (its keys: mio_jax/config/training.py, DataSection).
Source weights follow MIO's per-device batch ratios image-text : text : (interleaved + video) :
speech (stage 1 12:2:0:2, stage 2 2:2:6:6, stage 3 2:1:1:12; the interleaved+video share is split
evenly between the two sources). Weights are sample proportions. Stage 4 is SFT on conversations
with the loss on assistant turns only. Shard globs are relative to `data_dir` (absolute globs are
used as they are); `mixed_shards` points every source at one tokenization job's shards, each source
keeping its own kind (mio_jax/data/config.py).
"""

from __future__ import annotations

import ml_collections

from mio_jax.data.templates import DEFAULT_SYSTEM_PROMPT, DEFAULT_TEMPLATE_SET, VOICE_SYSTEM_PROMPT

MIO_RATIOS = {  # image_text, text, interleaved+video, speech_text
    1: (12, 2, 0, 2),
    2: (2, 2, 6, 6),
    3: (2, 1, 1, 12),
}
SIZES = ("smoke", "small", "full")
# The size names of configs/base.py map onto these.
SIZE_ALIASES = {"": "full", "1b": "small", "40m": "small"}


def stage_weights(stage: int) -> dict[str, float]:
  if stage == 4:
    return {"conversation": 1.0}
  if stage not in MIO_RATIOS:
    raise ValueError(f"stage={stage} is not one of 1, 2, 3, 4")
  image_text, text, inter_video, speech = MIO_RATIOS[stage]
  return {"image_text": image_text, "text": text, "interleaved": inter_video / 2,
          "video_text": inter_video / 2, "speech_text": speech}


def data_config(stage: int, size: str = "full") -> ml_collections.ConfigDict:
  size = SIZE_ALIASES.get(size, size)
  if size not in SIZES:
    raise ValueError(f"size={size!r} is not one of {SIZES + tuple(SIZE_ALIASES)}")
  c = ml_collections.ConfigDict()
  # "shards": the grain pipeline over token shards in data_dir; "synthetic": seeded learnable
  # sequences through the same batch contract (for the smoke run before any corpus is tokenized).
  c.source = "shards"
  c.data_dir = "data/shards"
  # One source per shard folder written by the tokenization jobs; weight 0 leaves a source out.
  # `kinds` (comma-separated, "" = all) keeps only those sample kinds: for shards of a job that
  # tokenized several manifests together (read from each shard's kinds index at start).
  c.sources = ml_collections.ConfigDict(
      {name: {"shards": f"{name}/*.array_record", "weight": float(w), "kinds": ""}
       for name, w in stage_weights(stage).items()})
  # A glob of one tokenization job's mixed-kind shards (e.g. OUT/shards/*.array_record): when set,
  # every source reads it, keeping its own kind, and data.source becomes "shards".
  c.mixed_shards = ""
  # Codes per image block (video: per frame) in the shards: 256 for a VQGAN f16 at 256 px, 32 for
  # SEED-Tokenizer-2 (MIO-7B's; --config.data.image_tokens=32). Checked against the tokenization
  # job's index.json; generation constrains image blocks to it (model_config.json records it).
  c.image_tokens = 256
  c.seq_len = {"smoke": 512, "small": 1024, "full": 2800}[size]
  # full: MIO's global batch is not published (unverified); 512 x 2800 tokens per step by default.
  c.global_batch = {"smoke": 8, "small": 32, "full": 512}[size]
  c.loss_mask = "assistant" if stage == 4 else "all"
  c.template_stage = stage
  c.image_generation_prob = 0.5
  c.video_generation_prob = 0.6
  c.speech_generation_prob = 0.5
  # "mio_release": the prompts of MIO's released code (infer.py: ``LaTeX quotes'', no colons);
  # "paper": the paper's wording ("Transcribe this speech:" in stages 1-2). docs/data_pipeline.md.
  c.template_set = DEFAULT_TEMPLATE_SET
  c.system_prompt = DEFAULT_SYSTEM_PROMPT
  # Conversations whose assistant turns are all speech (or meta chat_mode "voice") get MIO's
  # voice-mode system prompt (tokenization_mio.py MIO_VOICE_MODE_SYSTEM); "" uses system_prompt.
  c.voice_system_prompt = VOICE_SYSTEM_PROMPT
  c.add_bos = True
  c.add_eos = True
  c.overlong = "drop"  # "drop" | "truncate" samples longer than seq_len; both are counted
  c.max_segments_per_row = {"smoke": 16, "small": 32, "full": 64}[size]
  c.packing_bins = {"smoke": 8, "small": 16, "full": 64}[size]  # first-fit bins per packing round
  c.seed = 0
  # Row streams (mio_jax/data/train_iterator.py): S > 0 makes the batches independent of the number
  # of processes (and a resume under another count possible) when S is a multiple of it; 0: one
  # stream per distinct block of rows, tied to the process layout.
  c.streams = 0
  c.worker_count = {"smoke": 0, "small": 2, "full": 8}[size]  # grain processes; 0 = in-process
  c.worker_buffer_size = 2
  c.read_threads = {"smoke": 1, "small": 2, "full": 8}[size]
  c.on_corrupt = "error"  # "error" | "skip" (skipped records are counted)
  return c
