"""Orbax checkpoint -> Hugging Face Llama checkpoint (config.json, safetensors, tokenizer, mio_jax.json),
in MIO-7B's released layout (MIO's vocabulary fields in config.json, `<imgN>`/`<spchN>` tokens).

Parameters are restored one at a time to host memory (orbax partial restore), whatever mesh wrote
them, converted by the table in mapping.py and streamed into size-limited safetensors shards, so
peak host memory is about one stacked parameter plus one shard, not the whole model.

The checkpoint and the output may be on gs://. safetensors and transformers write local files only,
so an export to gs:// is written in a local staging folder (local disk needs room for the exported
model) and uploaded file by file at the end.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
import tempfile

import ml_dtypes
import numpy as np
import orbax.checkpoint as ocp

from mio_jax import storage
from mio_jax.export import mapping, mio_layout, safetensors_io
from mio_jax.export.vocab_layout import write_layout
from mio_jax.model.transformer import ModelConfig
from mio_jax.train.checkpoint import saved_param_shapes
from mio_jax.train.checkpoint_paths import resolve_params_dir
from mio_jax.train.run_config import find_run_config

log = logging.getLogger("mio_jax.export")

DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16, "float16": np.float16}


def model_config_from_shapes(shapes: dict[str, tuple[int, ...]], known: dict, where: str,
                             vocab=None) -> ModelConfig:
  """ModelConfig from parameter shapes plus `known` fields (norm_eps, rope_theta, ...); `vocab` (a
  Vocabulary) places the image ids of a model with a visual codebook, whose table lacks their rows.

  Shapes fix every size; a `known` size that disagrees with them raises.
  """
  for name in ("embed/table", "blocks/attn/wq", "blocks/attn/wk", "blocks/mlp/gate"):
    if name not in shapes:
      raise ValueError(f"{where}: parameter {name} is missing from the checkpoint")
  (rows, embed), (layers, _, heads, head_dim) = shapes["embed/table"], shapes["blocks/attn/wq"]
  visual = known.get("image_embedding", "table") != "table"
  vocab_size = rows + (vocab.image_codes if visual and vocab is not None else 0)
  sizes = dict(vocab_size=vocab_size, embed_dim=embed, num_layers=layers, num_heads=heads,
               num_kv_heads=shapes["blocks/attn/wk"][2], head_dim=head_dim,
               mlp_dim=shapes["blocks/mlp/gate"][2])
  for k, v in sizes.items():
    if k in known and known[k] != v:
      raise ValueError(f"{where}: model config says {k}={known[k]}, the checkpoint's shapes give {v}")
  return ModelConfig.from_config({**known, **sizes}, vocab)  # an unknown key in `known`: one line


def check_params(shapes: dict[str, tuple[int, ...]], cfg: ModelConfig, where: str) -> None:
  """Every mapped parameter present with the expected shape, nothing unmapped; else one clear line."""
  expected = mapping.our_shapes(cfg)
  for name, shape in expected.items():
    if name not in shapes:
      raise ValueError(f"{where}: parameter {name} is missing from the checkpoint")
    if shapes[name] != shape:
      raise ValueError(f"{where}: parameter {name} has shape {shapes[name]}, expected {shape}")
  extra = sorted(set(shapes) - set(expected))
  if extra:
    raise ValueError(f"{where}: parameters with no Hugging Face mapping: {extra}")


def read_param(params_dir: str, name: str) -> np.ndarray:
  """One parameter as a host numpy array (a partial restore: the other arrays are not read)."""
  item, args = {}, {}
  mapping.set_path(item, name, 0)
  mapping.set_path(args, name, ocp.RestoreArgs(restore_type=np.ndarray))
  with ocp.PyTreeCheckpointer() as ckptr:
    restored = ckptr.restore(params_dir, args=ocp.args.PyTreeRestore(
        item=item, restore_args=args, partial_restore=True))
  return np.asarray(mapping.get_path(restored, name))


def export(checkpoint: str, out_dir: str, *, run_config: dict | None = None,
           text_model: str | None = None, dtype: str = "float32", with_tokenizer: bool = True,
           max_shard_bytes: int = safetensors_io.DEFAULT_MAX_SHARD_BYTES,
           max_position_embeddings: int = 4096) -> dict:
  """Writes the HF checkpoint for `checkpoint` (workdir / checkpoints dir / step dir / params dir).

  `run_config` ({"model": ..., "vocab": ...}) defaults to the run's model_config.json. Returns a
  summary dict (step, files, config).
  """
  from mio_jax.vocab import Vocabulary

  if dtype not in DTYPES:
    raise ValueError(f"--dtype={dtype!r} is not one of {sorted(DTYPES)}")
  storage.check_reachable(checkpoint, "--checkpoint")
  storage.check_reachable(out_dir, "--out")
  params_dir = resolve_params_dir(checkpoint)
  run_config = run_config or find_run_config(params_dir)
  if run_config is None:
    raise ValueError(f"{checkpoint}: no model_config.json in the run directory; pass the training "
                     "config (launch/export.py --config configs/stageN.py:size)")
  vocab_cfg = dict(run_config.get("vocab", {}))
  if text_model:
    vocab_cfg["text_model"] = text_model
  if not vocab_cfg.get("text_model") or not with_tokenizer:
    vocab_cfg["text_model"] = None
  vocab = Vocabulary.from_config(vocab_cfg)
  shapes = saved_param_shapes(params_dir)
  cfg = model_config_from_shapes(shapes, dict(run_config.get("model", {})), params_dir, vocab)
  check_params(shapes, cfg, params_dir)
  if vocab.size != cfg.used_vocab_size:
    raise ValueError(f"{params_dir}: config.vocab gives {vocab.size} ids, the model {cfg.used_vocab_size}"
                     + (f" (of {cfg.vocab_size} padded)" if cfg.unpadded_vocab_size else ""))
  if with_tokenizer and not vocab.text_model:
    raise ValueError("the HF tokenizer needs the SentencePiece model: config.vocab.text_model is "
                     "empty (pass --text_model, or --no_tokenizer)")

  remote = storage.is_remote(out_dir)
  stage = tempfile.mkdtemp(prefix="mio_export_") if remote else out_dir
  try:
    files = _write_hf(params_dir, stage, cfg, vocab, dtype, with_tokenizer, max_shard_bytes,
                      max_position_embeddings, run_config.get("data"))
    if remote:
      _upload_dir(stage, out_dir)
  finally:
    if remote:
      shutil.rmtree(stage, ignore_errors=True)
  step = os.path.basename(os.path.dirname(params_dir))
  return {"params_dir": params_dir, "step": int(step) if step.isdigit() else None, "files": files,
          "model": dataclasses.asdict(cfg)}


class _ImageRows:
  """A parameter as Hugging Face needs it: with a visual codebook (mio_jax/model/visual_cascade.py)
  the image ids' effective rows E_eff are spliced into embed_tokens (image_embedding "frozen" or
  "cascade") and, with image_head "tied", into lm_head, so the export is a plain Llama whose logits
  are ours. E_eff is computed once, from the saved codebook and map."""

  def __init__(self, params_dir: str, cfg: ModelConfig):
    self.params_dir, self.cfg, self._rows = params_dir, cfg, None

  def rows(self) -> np.ndarray:
    if self._rows is None:
      from mio_jax.model.visual_cascade import effective_image_rows
      self._rows = effective_image_rows(lambda name: read_param(self.params_dir, name), self.cfg)
      log.info("computed the %d image ids' effective embeddings", self.cfg.image_codes)
    return self._rows

  def spliced(self, name: str) -> np.ndarray:
    value, cfg, base = read_param(self.params_dir, name), self.cfg, self.cfg.image_base
    if name == "embed/table" and cfg.image_embedding != "table":
      return np.concatenate([value[:base], self.rows().astype(value.dtype), value[base:]], axis=0)
    if name == "lm_head" and cfg.image_head == "tied":
      return np.concatenate([value[:, :base], self.rows().T.astype(value.dtype), value[:, base:]], axis=1)
    return value


def _upload_dir(stage: str, out_dir: str) -> None:
  """Every staged file to `out_dir`, after removing an earlier export's model files there."""
  out = storage.as_path(out_dir)
  for old in (out.iterdir() if out.is_dir() else ()):  # a bucket "folder" exists once it holds files
    if safetensors_io.is_model_file(old.name):
      old.unlink()
  for name in sorted(os.listdir(stage)):
    storage.upload(os.path.join(stage, name), out / name)


def _write_hf(params_dir: str, out_dir: str, cfg: ModelConfig, vocab, dtype: str, with_tokenizer: bool,
              max_shard_bytes: int, max_position_embeddings: int, run_data: dict | None) -> list[str]:
  """The HF directory in local `out_dir`; returns the safetensors file names. `run_data`: the run's
  recorded data facts (image block length, template set), kept in mio_jax.json for an import."""
  os.makedirs(out_dir, exist_ok=True)
  out_dtype = DTYPES[dtype]
  itemsize = np.dtype(out_dtype).itemsize
  planned = {name: math.prod(shape) * itemsize for name, shape in mapping.exported_shapes(cfg).items()}
  writer = safetensors_io.ShardedWriter(out_dir, planned, max_shard_bytes)
  image_rows = _ImageRows(params_dir, cfg)
  for entry in mapping.PARAM_MAP:
    value = mapping.strip_vocab_padding(entry.ours, image_rows.spliced(entry.ours), cfg)
    for hf_name, tensor in mapping.to_hf_tensors(entry, value):
      writer.add(hf_name, tensor.astype(out_dtype))
    del value
    log.info("exported %s", entry.ours)
  files = writer.close()

  from transformers import LlamaConfig

  # Generation stops at EOS, and at <|im_end|> too (the chat model's stop token) when it differs.
  eos = vocab.eos if vocab.im_end == vocab.eos else [vocab.eos, vocab.im_end]
  hf_kwargs = mapping.hf_config_dict(cfg, max_position_embeddings=max_position_embeddings,
                                     bos_token_id=vocab.bos, eos_token_id=eos, torch_dtype=dtype)
  # MIO's vocabulary fields (text_vocab_size, image_bos, ...) ride along in config.json.
  LlamaConfig(**hf_kwargs, **mio_layout.config_fields(vocab)).save_pretrained(out_dir)
  write_layout(vocab, out_dir, run_data)
  if with_tokenizer:
    from mio_jax.export.hf_tokenizer import save_hf_tokenizer

    save_hf_tokenizer(vocab, out_dir, model_max_length=max_position_embeddings)
  return files
