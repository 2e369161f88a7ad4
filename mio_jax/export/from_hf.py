"""Hugging Face Llama checkpoint -> orbax checkpoint of our model, vocabulary extended to MIO's.

    OUT/checkpoints/0/params     the parameter tree (what `config.init_from=OUT` loads)
    OUT/model_config.json        model and vocab config (what launch/export.py reads)
    OUT/tokenizer.model          the SentencePiece model, when the HF directory has one

The vocabulary layout: --vocab_config, else the directory's mio_jax.json (our exports), else MIO-7B's
released layout read from config.json and the tokenizer files (mio_layout.py), else a text-only
checkpoint whose ids are all text, with MIO's code layout after them.

New vocabulary rows (special and code tokens, in the embedding and the LM head alike) start at the
mean of the checkpoint's rows plus Gaussian noise with `noise` times each dimension's standard
deviation over those rows (default 0.01): new tokens begin as an "average token", so the
pretrained model's text predictions barely move, and the noise breaks the symmetry between them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil

import numpy as np
import orbax.checkpoint as ocp

from mio_jax import storage
from mio_jax.export import mapping, mio_layout
from mio_jax.export.safetensors_io import Reader
from mio_jax.export.vocab_layout import LAYOUT_FILE, read_layout, read_run_data
from mio_jax.model.transformer import ModelConfig
from mio_jax.model.vocab_padding import padded_vocab_size
from mio_jax.train.run_config import RUN_CONFIG

log = logging.getLogger("mio_jax.export")

# Buffers some older checkpoints carry; they are recomputed, not weights.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)
DEFAULT_NOISE = 0.01


def new_rows(known: np.ndarray, count: int, *, noise: float, rng: np.random.Generator) -> np.ndarray:
  """`count` rows: the mean of `known` [n, dim] plus noise * per-dimension std * N(0, 1)."""
  mean = known.mean(0, dtype=np.float64)
  std = known.std(0, dtype=np.float64)
  return (mean + noise * std * rng.standard_normal((count, known.shape[1]))).astype(known.dtype)


def _vocab_config(hf_dir: str, hf: dict, vocab_cfg: dict | None, text_model: str | None) -> dict:
  """config.vocab for the import: --vocab_config, else mio_jax.json (checked against MIO's fields when
  config.json has them), else MIO's released layout (config.json + tokenizer files), else text only."""
  if vocab_cfg is None:
    mio = mio_layout.read_mio_layout(hf_dir, hf) if mio_layout.has_mio_fields(hf) else None
    if os.path.isfile(os.path.join(hf_dir, LAYOUT_FILE)):
      vocab_cfg = read_layout(hf_dir)
      if mio is not None:
        mio_layout.check_against(vocab_cfg, mio, os.path.join(hf_dir, LAYOUT_FILE), hf_dir)
    elif mio is not None:
      vocab_cfg = mio
    else:  # a text-only checkpoint (Yi-6B-Base): its ids are the text ids, MIO's codes follow
      named = mio_layout.token_files(hf_dir)
      if named:
        raise ValueError(f"{next(iter(named))} names code tokens (<img0>, <spch0>, ...) but "
                         f"{os.path.join(hf_dir, 'config.json')} has no {'/'.join(mio_layout.SIZE_FIELDS)}: "
                         "pass --vocab_config with the layout")
      vocab_cfg = dict(text_size=hf["vocab_size"])  # Vocabulary's defaults are MIO-7B's code layout
  vocab_cfg = dict(vocab_cfg)
  if text_model:
    vocab_cfg["text_model"] = text_model
  elif not vocab_cfg.get("text_model") and os.path.isfile(os.path.join(hf_dir, "tokenizer.model")):
    vocab_cfg["text_model"] = os.path.join(hf_dir, "tokenizer.model")
  return vocab_cfg


def _run_data(hf_dir: str, hf: dict) -> dict:
  """The data facts generation needs (model_config.json's "data"): our export's mio_jax.json records
  them; MIO's release (its config.json fields) trained on SEED-Tokenizer-2, 32 codes per image
  (MIO_FACTS.md); a text-only checkpoint has none (generation's default then: 256, VQGAN f16)."""
  data = read_run_data(hf_dir)
  if not data and mio_layout.has_mio_fields(hf) and not os.path.isfile(os.path.join(hf_dir, LAYOUT_FILE)):
    data = {"image_tokens": mio_layout.MIO_7B_IMAGE_TOKENS}
  return data


def read_hf_config(hf_dir: str) -> dict:
  path = os.path.join(hf_dir, "config.json")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{hf_dir}: no config.json (not a Hugging Face checkpoint directory)")
  with open(path) as f:
    return json.load(f)


def load_hf_params(hf_dir: str, cfg: ModelConfig, hf_vocab: int, tied: bool, *, noise: float,
                   seed: int) -> dict:
  """Our float32 param tree from the HF tensors; vocabulary rows past `hf_vocab` initialised new,
  rows past cfg.used_vocab_size (hardware padding) zero."""
  reader = Reader(hf_dir)
  hf_cfg = dataclasses.replace(cfg, vocab_size=hf_vocab)
  hf_shapes, shapes = mapping.our_shapes(hf_cfg), mapping.our_shapes(cfg)
  lm_head_from_embed = tied and "lm_head.weight" not in reader
  expected = {n for e in mapping.PARAM_MAP for n in mapping.hf_names(e, cfg.num_layers)}
  if lm_head_from_embed:
    expected.discard("lm_head.weight")
  unexpected = sorted(n for n in reader.names() - expected if not n.endswith(_IGNORED_SUFFIXES))
  if unexpected:
    raise ValueError(f"{hf_dir}: tensors with no mapping to our model (not a plain Llama?): {unexpected[:5]}")

  def read(entry):
    want = mapping.hf_shape(entry, hf_shapes[entry.ours])

    def get(name):
      if lm_head_from_embed and name == "lm_head.weight":
        name = "model.embed_tokens.weight"  # tied: the head is the embedding
      t = reader.get(name)
      if tuple(t.shape) != want:
        raise ValueError(f"{hf_dir}: tensor {name} has shape {tuple(t.shape)}, expected {want}")
      return t.astype(np.float32)
    return get

  rng = np.random.default_rng(seed)
  params: dict = {}
  for entry in mapping.PARAM_MAP:
    value = mapping.from_hf_tensors(entry, read(entry), hf_shapes[entry.ours])
    if entry.ours in mapping.VOCAB_AXIS and hf_vocab < cfg.used_vocab_size:
      axis = mapping.VOCAB_AXIS[entry.ours]
      rows = np.moveaxis(value, axis, 0)
      extra = new_rows(rows, cfg.used_vocab_size - hf_vocab, noise=noise, rng=rng)
      value = np.moveaxis(np.concatenate([rows, extra]), 0, axis)
    value = mapping.pad_vocab(entry.ours, value, cfg)
    assert value.shape == shapes[entry.ours], (entry.ours, value.shape)
    mapping.set_path(params, entry.ours, np.ascontiguousarray(value, dtype=np.float32))
  return params


def import_hf(hf_dir: str, out_dir: str, *, vocab_cfg: dict | None = None, text_model: str | None = None,
              noise: float = DEFAULT_NOISE, seed: int = 0, vocab_multiple: int = 1) -> dict:
  """Writes OUT (see the module doc) from the HF checkpoint in `hf_dir`; returns a summary dict.

  `vocab_multiple` > 1 pads the vocabulary to a multiple of it with zero rows, as the accelerator
  presets are (1024: configs/models.py); the padded ids are never predicted.
  """
  from mio_jax.vocab import Vocabulary

  if os.path.isdir(os.path.join(out_dir, "checkpoints")):
    raise ValueError(f"--out={out_dir!r} already holds checkpoints/: choose a new directory")
  hf = read_hf_config(hf_dir)
  fields = mapping.model_config_from_hf(hf, os.path.join(hf_dir, "config.json"))
  hf_vocab = fields.pop("vocab_size")
  vocab_cfg = _vocab_config(hf_dir, hf, vocab_cfg, text_model)
  vocab = Vocabulary.from_config(vocab_cfg)
  if hf_vocab > vocab.size:
    raise ValueError(f"{hf_dir}: the checkpoint has {hf_vocab} ids, more than the {vocab.size} of the "
                     "vocabulary layout (pass --vocab_config with a larger text_size)")
  if hf_vocab < vocab.text_size:
    log.warning("%s has %d ids, fewer than text_size %d: text ids %d.. start untrained", hf_dir,
                hf_vocab, vocab.text_size, hf_vocab)
  if vocab_multiple < 1:
    raise ValueError(f"--vocab_multiple={vocab_multiple} must be at least 1")
  padded = padded_vocab_size(vocab.size, vocab_multiple)
  cfg = ModelConfig(vocab_size=padded, unpadded_vocab_size=vocab.size if padded > vocab.size else 0,
                    **fields, dtype="float32")
  params = load_hf_params(hf_dir, cfg, hf_vocab, bool(hf.get("tie_word_embeddings", False)),
                          noise=noise, seed=seed)

  out_dir = os.path.abspath(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  if vocab_cfg.get("text_model"):
    local = os.path.join(out_dir, "tokenizer.model")
    if os.path.abspath(vocab_cfg["text_model"]) != local:
      shutil.copyfile(vocab_cfg["text_model"], local)
    vocab_cfg["text_model"] = local
  manager = ocp.CheckpointManager(os.path.join(out_dir, "checkpoints"), item_names=("params",),
                                  options=ocp.CheckpointManagerOptions(create=True))
  manager.save(0, args=ocp.args.Composite(params=ocp.args.StandardSave(params)))
  manager.wait_until_finished()
  manager.close()
  arch = {k: v for k, v in dataclasses.asdict(cfg).items()
          if k in fields or k in ("vocab_size", "unpadded_vocab_size")}
  run = {"model": arch, "vocab": vocab_cfg, "imported_from": os.path.abspath(hf_dir)}
  data = _run_data(hf_dir, hf)
  if data:
    run["data"] = data
  storage.atomic_write_text(os.path.join(out_dir, RUN_CONFIG), json.dumps(run, indent=2))
  return {"out_dir": out_dir, "hf_vocab": hf_vocab, "vocab_size": vocab.size, "padded_vocab_size": padded,
          "new_rows": vocab.size - hf_vocab, "model": arch}
