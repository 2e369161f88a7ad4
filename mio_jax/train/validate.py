"""Checks that a training config can work, run before anything is compiled.

Each failure is one line naming the config key, raised as `ConfigError`: first the tree's keys
(mio_jax/config/training.py: none unknown, none missing), then their values.
"""

from __future__ import annotations

from typing import Sequence

from mio_jax import storage
from mio_jax.config.keys import ConfigError
from mio_jax.config.training import check_config_keys
from mio_jax.data import job_index
from mio_jax.model.attention import AttentionUnavailable, check_impl
from mio_jax.model.transformer import REMAT_POLICIES
from mio_jax.model.visual_cascade import check_codebook_file, check_image_settings
from mio_jax.parallel.mesh import MeshConfigError, mesh_shape, mesh_topology
from mio_jax.parallel.rules import MESH_AXES, get_rules
from mio_jax.parallel.topology import Topology
from mio_jax.train.code_order import check_code_order_value, training_vocab
from mio_jax.train.divergence import POLICIES as NONFINITE_POLICIES
from mio_jax.train.run_config import check_init_vocab, resolve_init_from
from mio_jax.train.schedules import SCHEDULES


def validate(config, devices: Sequence | Topology) -> dict[str, int]:
  """Raise ConfigError for the first problem; return the resolved mesh axis sizes.

  `devices` (e.g. jax.devices()) are grouped into slices/nodes by mesh_topology, as make_mesh does.
  """
  check_config_keys(config)
  try:
    topology = devices if isinstance(devices, Topology) else mesh_topology(config.mesh, devices)
    ici, dcn = mesh_shape(config.mesh, topology)
  except MeshConfigError as e:
    raise ConfigError(str(e)) from None
  axes = {a: i * d for a, i, d in zip(MESH_AXES, ici, dcn)}
  m, data = config.model, config.data

  batch_shards = axes["data"] * axes["fsdp"]
  accum = config.optimizer.grad_accum_steps
  if accum < 1:
    raise ConfigError(f"config.optimizer.grad_accum_steps={accum} must be at least 1")
  if data.global_batch % (batch_shards * accum):
    raise ConfigError(
        f"config.data.global_batch={data.global_batch} is not divisible by data x fsdp = {batch_shards}"
        + (f" x grad_accum_steps {accum}" if accum > 1 else ""))
  if data.seq_len < 2:
    raise ConfigError(f"config.data.seq_len={data.seq_len} must be at least 2")
  if data.image_tokens < 1:
    raise ConfigError(f"config.data.image_tokens={data.image_tokens} must be at least 1")
  try:
    patterns = job_index.shard_patterns(config)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  job_index.check_image_codes(data, config.vocab, patterns)  # the shards' tokenizer vs the config

  if m.attention_impl == "cudnn":  # kept for inference on unpacked rows (mio_jax/kernels/cudnn.py)
    raise ConfigError("config.model.attention_impl='cudnn' cannot train: cuDNN cannot apply packed "
                      "segment ids under jit; use 'pallas' or 'auto'")
  try:  # a kernel that cannot be imported or cannot run on these devices: here, not mid-compile
    check_impl(m.attention_impl, topology.granules[0][0].platform)
  except AttentionUnavailable as e:
    raise ConfigError(str(e)) from None
  if m.remat_policy not in REMAT_POLICIES:
    raise ConfigError(f"config.model.remat_policy={m.remat_policy!r} is unknown; "
                      f"choose one of {', '.join(REMAT_POLICIES)}")
  if m.num_heads % m.num_kv_heads:
    raise ConfigError(f"config.model.num_heads={m.num_heads} is not a multiple of num_kv_heads={m.num_kv_heads}")
  if m.loss_chunk < 0:
    raise ConfigError(f"config.model.loss_chunk={m.loss_chunk} must be 0 (plain loss) or a token count")
  if m.head_dim % 2:
    raise ConfigError(f"config.model.head_dim={m.head_dim} must be even for rotary embeddings")

  try:
    check_code_order_value(config.vocab.code_order)  # before comparing it with the init checkpoint's
  except ValueError as e:
    raise ConfigError(str(e)) from None
  init_from = resolve_init_from(config)
  if init_from:
    key = "config.init_from" if config.init_from else "config.runs_dir/previous_run"
    try:
      storage.check_reachable(init_from, key)
    except storage.StorageError as e:
      raise ConfigError(str(e)) from None
    if not storage.as_path(init_from).exists():
      raise ConfigError(f"{key}={init_from!r} does not exist")
    try:
      check_init_vocab(config, init_from, key)
    except ValueError as e:
      raise ConfigError(str(e)) from None
  try:  # loads and checks the text model when one is set; code_order "from_init" resolved
    vocab = training_vocab(config)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  key, used = (("unpadded_vocab_size", m.unpadded_vocab_size) if m.unpadded_vocab_size
               else ("vocab_size", m.vocab_size))
  if used != vocab.size:
    raise ConfigError(f"config.model.{key}={used} disagrees with the tokenizer layout in "
                      f"config.vocab ({vocab.size} ids)")
  if m.vocab_size < used:
    raise ConfigError(f"config.model.vocab_size={m.vocab_size} is smaller than "
                      f"config.model.unpadded_vocab_size={used}")
  _check_image_embedding(m, vocab)

  try:
    get_rules(config.sharding.rules)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  divisible = [("num_heads", m.num_heads, "tensor"), ("mlp_dim", m.mlp_dim, "tensor"),
                ("vocab_size", m.vocab_size, "tensor"), ("embed_dim", m.embed_dim, "fsdp")]
  if m.image_embedding != "table":  # else the frozen codebook would sit whole on every chip
    divisible.append(("image_code_dim", m.image_code_dim, "fsdp"))
  for key, size, axis in divisible:
    if size % axes[axis]:
      raise ConfigError(f"config.model.{key}={size} is not divisible by the {axis} axis ({axes[axis]})")
  # Fewer KV heads than tensor shards: each is repeated (rules.kv_head_repeats), its weights replicated.
  if m.num_kv_heads % axes["tensor"] and axes["tensor"] % m.num_kv_heads:
    raise ConfigError(f"config.model.num_kv_heads={m.num_kv_heads} and the tensor axis ({axes['tensor']}) "
                      "must divide one another")

  t = config.train
  if t.steps < 1:
    raise ConfigError(f"config.train.steps={t.steps} must be at least 1")
  for key in ("log_every", "checkpoint_every", "keep_checkpoints", "max_consecutive_skips"):
    if t[key] < 1:
      raise ConfigError(f"config.train.{key}={t[key]} must be at least 1")
  if t.keep_period < 0:
    raise ConfigError(f"config.train.keep_period={t.keep_period} must be 0 (off) or a step count")
  if t.on_nonfinite not in NONFINITE_POLICIES:
    raise ConfigError(f"config.train.on_nonfinite={t.on_nonfinite!r} is not one of "
                      f"{', '.join(NONFINITE_POLICIES)}")
  profile = tuple(t.profile_steps)
  if len(profile) != 2 or profile[0] < 1 or profile[1] < 0:
    raise ConfigError(f"config.train.profile_steps={profile} must be (first step >= 1, count >= 0)")
  _check_schedule(config.optimizer)
  e = config.eval
  for key, least in (("every", 0), ("batches", 1), ("pairing_samples", 0), ("samples", 0),
                     ("sample_tokens", 1)):
    if e[key] < least:
      raise ConfigError(f"config.eval.{key}={e[key]} must be at least {least}")
  if e.samples and not e.every:
    raise ConfigError(f"config.eval.samples={e.samples} needs evaluation on: set config.eval.every > 0")
  return axes


def _check_image_embedding(m, vocab) -> None:
  """UniCode²'s visual codebook settings (mio_jax/model/visual_cascade.py); reads the centroids
  file's header, not its data."""
  check_image_settings(m, vocab.image_codes)
  if m.image_embedding != "table":
    problem = check_codebook_file(m, vocab.image_codes)
    if problem:
      raise ConfigError(problem)


def _check_schedule(opt) -> None:
  if opt.schedule not in SCHEDULES:
    raise ConfigError(f"config.optimizer.schedule={opt.schedule!r} is not one of {', '.join(SCHEDULES)}")
  for key in ("warmup_fraction", "decay_fraction", "final_lr_fraction"):
    if not 0.0 <= opt[key] <= 1.0:
      raise ConfigError(f"config.optimizer.{key}={opt[key]} must be between 0 and 1")
  if opt.schedule == "warmup_stable_decay" and opt.warmup_fraction + opt.decay_fraction > 1.0:
    raise ConfigError(f"config.optimizer.decay_fraction={opt.decay_fraction} and warmup_fraction="
                      f"{opt.warmup_fraction} add up to more than the whole run")


def check_same_config_everywhere(config) -> None:
  """In a multi-process job, every process must have been given the same config (one line if not)."""
  import hashlib

  import jax
  import numpy as np
  if jax.process_count() == 1:
    return
  from jax.experimental import multihost_utils
  digest = hashlib.sha256(config.to_json_best_effort(sort_keys=True).encode()).digest()
  mine = np.frombuffer(digest[:8], np.uint32)
  everyone = np.asarray(multihost_utils.process_allgather(mine))
  differ = [i for i in range(len(everyone)) if not np.array_equal(everyone[i], everyone[0])]
  if differ:
    raise ConfigError(f"processes {differ} were given another config than process 0 (this is "
                      f"process {jax.process_index()}); every process must run the same command "
                      "with the same --config flags")
