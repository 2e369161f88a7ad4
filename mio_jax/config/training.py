"""The training config tree's schema: every section and key of configs/stageN.py, checked strictly.

`check_config_keys(config)` runs first in mio_jax/train/validate.py (so in launch/train.py and
launch/train_compile.py before anything compiles): an unknown or a missing key is one ConfigError
line naming it. The values, and what each means, are in configs/base.py, configs/models.py and
configs/data.py; the library reads every key here without a default of its own.
"""

from __future__ import annotations

import dataclasses

from mio_jax.config.keys import ConfigError, check_section, optional
from mio_jax.kernels.block_sizes import BlockSizes
from mio_jax.model.transformer import ModelConfig

__all__ = ["ConfigError", "TrainingConfig", "check_config_keys", "check_data_keys"]


@dataclasses.dataclass(frozen=True)
class ModelSection(ModelConfig):
  """config.model: every ModelConfig field (each required here), and the kernels' keys (KERNEL_KEYS,
  which ModelConfig.from_config lets through)."""
  # Overrides of the backend's attention tiles (mio_jax/kernels/block_sizes.py); absent: its defaults.
  attention_blocks: dict | None = optional(keys_of=BlockSizes)


@dataclasses.dataclass(frozen=True)
class VocabSection:
  """config.vocab: the unified vocabulary's layout (mio_jax/vocab.py)."""
  text_model: str  # a SentencePiece .model; "" for none (then text_size)
  text_size: int
  image_codes: int
  speech_codebook: int
  speech_layers: int
  code_order: str  # "from_init" | "image_first" | "speech_first" (mio_jax/train/code_order.py)


@dataclasses.dataclass(frozen=True)
class SourceSection:
  """config.data.sources.NAME: one source of the mixture."""
  shards: str  # a glob, relative to data.data_dir unless absolute
  weight: float  # sample proportion; 0 leaves the source out
  kinds: str  # comma-separated sample kinds kept; "" keeps all


@dataclasses.dataclass(frozen=True)
class DataSection:
  """config.data: sources and mixture, templates, packing, workers (mio_jax/data/)."""
  source: str  # "shards" | "synthetic"
  data_dir: str
  sources: dict[str, SourceSection]
  mixed_shards: str
  seq_len: int
  global_batch: int
  image_tokens: int  # codes per image block: 256 (VQGAN f16 at 256 px), 32 (SEED-Tokenizer-2)
  loss_mask: str
  template_stage: int
  image_generation_prob: float
  video_generation_prob: float
  speech_generation_prob: float
  template_set: str  # "mio_release" | "paper" (mio_jax/data/templates.py)
  system_prompt: str
  voice_system_prompt: str
  add_bos: bool
  add_eos: bool
  overlong: str
  max_segments_per_row: int
  packing_bins: int
  seed: int
  streams: int
  worker_count: int
  worker_buffer_size: int
  read_threads: int
  on_corrupt: str


@dataclasses.dataclass(frozen=True)
class OptimizerSection:
  """config.optimizer: AdamW (mio_jax/train/state.py) on a learning-rate schedule
  (mio_jax/train/schedules.py)."""
  schedule: str  # warmup_cosine | warmup_stable_decay | constant | linear
  peak_lr: float
  warmup_fraction: float
  final_lr_fraction: float
  decay_fraction: float  # warmup_stable_decay's decay share of the steps
  b1: float
  b2: float
  eps: float
  weight_decay: float
  clip_norm: float
  grad_accum_steps: int
  z_loss: float


@dataclasses.dataclass(frozen=True)
class TrainSection:
  """config.train: steps, logging, checkpoints, non-finite steps (mio_jax/train/loop.py)."""
  steps: int
  seed: int
  log_every: int
  checkpoint_every: int
  keep_checkpoints: int
  keep_period: int
  on_nonfinite: str
  max_consecutive_skips: int
  async_checkpointing: bool
  peak_tflops_per_device: float
  profile_steps: tuple  # (first step, count): a jax.profiler trace; count 0: off


@dataclasses.dataclass(frozen=True)
class EvalSection:
  """config.eval: held-out evaluation in the loop (mio_jax/train/evaluation.py)."""
  every: int  # steps between evaluations (and at step 1 and the last step); 0: off
  batches: int  # global batches per evaluation, the same ones every time
  mixed_shards: str  # a glob of held-out shards; "" with synthetic data: unseen synthetic rows
  seed: int
  pairing_samples: int  # per pair kind, for eval_pairing_margin_<kind>; 0: off
  samples: int  # held-out prompts per task for TensorBoard samples (mio_jax/train/eval_samples.py); 0: off
  sample_tokens: int  # max new tokens of a generated caption or transcript
  image_tokenizer: str  # a VQGAN dir to decode generated images; "": their codes as text
  speech_tokenizer: str  # a SpeechTokenizer dir to decode generated speech; "": codes as text


@dataclasses.dataclass(frozen=True)
class MeshAxesSection:
  data: int
  fsdp: int
  tensor: int


@dataclasses.dataclass(frozen=True)
class MeshSection:
  """config.mesh: axis sizes inside a slice/node (ici) and across them (dcn) (mio_jax/parallel/)."""
  ici: MeshAxesSection
  dcn: MeshAxesSection
  processes_per_node: int


@dataclasses.dataclass(frozen=True)
class ShardingSection:
  rules: str | list  # a name in mio_jax/parallel/rules.py's RULE_SETS, or (logical, mesh axis) pairs


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
  """The whole tree."""
  stage: int
  stage_name: str
  model: ModelSection
  vocab: VocabSection
  data: DataSection
  optimizer: OptimizerSection
  train: TrainSection
  eval: EvalSection
  init_from: str  # parameters to start from (a run's workdir or step dir); "" for none
  runs_dir: str  # with init_from "": start from RUNS_DIR/previous_run when both are set
  previous_run: str
  mesh: MeshSection
  sharding: ShardingSection


def check_config_keys(config) -> None:
  """ConfigError naming the first unknown or missing key of the training config."""
  check_section(config, TrainingConfig, "config")


def check_data_keys(config) -> None:
  """The same, for the two sections the input pipeline reads (config.vocab and config.data)."""
  check_section(config.vocab, VocabSection, "config.vocab")
  check_section(config.data, DataSection, "config.data")
