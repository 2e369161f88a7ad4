"""Checks that a training config can work, run before anything is compiled.

Each failure is one line naming the config key, raised as `ConfigError`.
"""

from __future__ import annotations

from mio_jax import storage
from mio_jax.export.run_config import resolve_init_from
from mio_jax.model.attention import available_impls
from mio_jax.model.transformer import REMAT_POLICIES
from mio_jax.parallel.mesh import MeshConfigError, mesh_shape
from mio_jax.parallel.rules import MESH_AXES, get_rules
from mio_jax.vocab import SPECIAL_TOKENS, Vocabulary


class ConfigError(ValueError):
  pass


def modality_ranges(vocab: Vocabulary) -> dict[str, tuple[int, int]]:
  """[lo, hi) target ids per modality, for per-modality losses; special tokens count as text."""
  speech_ids = vocab.speech_layers * vocab.speech_codebook
  return {"text": (0, vocab.text_size + len(SPECIAL_TOKENS)),
          "image": (vocab.image_base, vocab.image_base + vocab.image_codes),
          "speech": (vocab.speech_base, vocab.speech_base + speech_ids)}


def validate(config, num_devices: int, num_slices: int = 1) -> dict[str, int]:
  """Raise ConfigError for the first problem; return the resolved mesh axis sizes."""
  try:
    ici, dcn = mesh_shape(config.mesh, num_devices, num_slices)
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

  if m.attention_impl not in available_impls():
    raise ConfigError(f"config.model.attention_impl={m.attention_impl!r} is unknown; "
                      f"choose one of {', '.join(available_impls())}")
  if m.remat_policy not in REMAT_POLICIES:
    raise ConfigError(f"config.model.remat_policy={m.remat_policy!r} is unknown; "
                      f"choose one of {', '.join(REMAT_POLICIES)}")
  if m.num_heads % m.num_kv_heads:
    raise ConfigError(f"config.model.num_heads={m.num_heads} is not a multiple of num_kv_heads={m.num_kv_heads}")
  if m.head_dim % 2:
    raise ConfigError(f"config.model.head_dim={m.head_dim} must be even for rotary embeddings")

  try:
    vocab = Vocabulary.from_config(config.vocab)  # loads and checks the text model when one is set
  except ValueError as e:
    raise ConfigError(str(e)) from None
  if m.vocab_size != vocab.size:
    raise ConfigError(f"config.model.vocab_size={m.vocab_size} disagrees with the tokenizer layout in "
                      f"config.vocab ({vocab.size} ids)")

  try:
    get_rules(config.sharding.rules)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  for key, size, axis in (("num_kv_heads", m.num_kv_heads, "tensor"), ("mlp_dim", m.mlp_dim, "tensor"),
                          ("vocab_size", m.vocab_size, "tensor"), ("embed_dim", m.embed_dim, "fsdp")):
    if size % axes[axis]:
      raise ConfigError(f"config.model.{key}={size} is not divisible by the {axis} axis ({axes[axis]})")

  init_from = resolve_init_from(config)
  if init_from:
    key = "config.init_from" if config.get("init_from") else "config.runs_dir/previous_run"
    try:
      storage.check_reachable(init_from, key)
    except storage.StorageError as e:
      raise ConfigError(str(e)) from None
    if not storage.as_path(init_from).exists():
      raise ConfigError(f"{key}={init_from!r} does not exist")
  if config.train.steps < 1:
    raise ConfigError(f"config.train.steps={config.train.steps} must be at least 1")
  return axes
