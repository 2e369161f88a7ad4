"""A trained run's model and vocabulary, from its checkpoint and model_config.json."""

from __future__ import annotations

import jax
from flax import nnx

from mio_jax.model.transformer import ModelConfig, Transformer
from mio_jax.train.checkpoint import load_params, resolve_params_dir
from mio_jax.train.run_config import find_run_config, run_image_tokens, run_template_set
from mio_jax.vocab import Vocabulary


def load_model(checkpoint: str, *, text_model: str | None = None) -> tuple[Transformer, Vocabulary]:
  """`checkpoint`: a workdir (latest step), checkpoints dir, step dir or params dir."""
  try:
    params_dir = resolve_params_dir(checkpoint)
  except FileNotFoundError:
    raise FileNotFoundError(f"--checkpoint={checkpoint}: no checkpoint with a params item found there") from None
  run = find_run_config(params_dir)
  if run is None:
    raise ValueError(f"{checkpoint}: no model_config.json in it or its parents (written by launch/train.py)")
  vocab_cfg = dict(run["vocab"])
  if text_model:
    vocab_cfg["text_model"] = text_model
  vocab = Vocabulary.from_config(vocab_cfg)
  cfg = ModelConfig.from_config(run["model"], vocab)
  if vocab.size != cfg.used_vocab_size:
    raise ValueError(f"{checkpoint}: vocabulary has {vocab.size} ids, model_config.json's model "
                     f"{cfg.used_vocab_size}")
  abstract = nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0)))
  graphdef, state = nnx.split(abstract)
  shapes = nnx.to_pure_dict(state)
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  params = load_params(params_dir, shapes, jax.tree.map(lambda _: device, shapes))
  nnx.replace_by_pure_dict(state, params)
  return nnx.merge(graphdef, state), vocab


def _checkpoint_run_config(checkpoint: str) -> dict | None:
  """model_config.json of the run the checkpoint belongs to (None: none recorded)."""
  try:
    return find_run_config(resolve_params_dir(checkpoint))
  except FileNotFoundError:
    raise FileNotFoundError(f"--checkpoint={checkpoint}: no checkpoint with a params item found there") from None


def checkpoint_template_set(checkpoint: str) -> str:
  """The template set (config.data.template_set) the checkpoint's run trained with."""
  return run_template_set(_checkpoint_run_config(checkpoint))


def checkpoint_image_tokens(checkpoint: str) -> int:
  """Codes per image block (config.data.image_tokens) the checkpoint's run trained with."""
  return run_image_tokens(_checkpoint_run_config(checkpoint))
