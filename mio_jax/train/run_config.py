"""`model_config.json` next to a run's checkpoints: the model and vocabulary config, so an export
(or the next stage) rebuilds the network without the original config file.

    WORKDIR/model_config.json   {"model": {...ModelConfig fields}, "vocab": {...config.vocab},
                                 "data": {"template_set": ..., "image_tokens": ...}}

The template set is recorded so evaluation and generation prompt a checkpoint in the wording it
trained on (`run_template_set`), the image block length so generation makes blocks of the
tokenizer it trained on (`run_image_tokens`: 256 VQGAN f16, 32 SEED-Tokenizer-2).

WORKDIR may be local or gs:// (mio_jax.storage). The train loop writes it once at start
(`save_run_config(workdir, config)`); the export, the import and generation find it with
`find_run_config` from a workdir, its checkpoints dir, a step dir or a params dir.
"""

from __future__ import annotations

import json
import os

from mio_jax import storage
from mio_jax.model.transformer import ModelConfig

RUN_CONFIG = "model_config.json"
FROM_INIT = "from_init"  # config.vocab.code_order: the init checkpoint's (mio_jax/train/code_order.py)
_VOCAB_KEYS = ("text_size", "text_model", "image_codes", "speech_codebook", "speech_layers", "code_order")


def _plain(cfg) -> dict:
  return cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)


def run_config_dict(config) -> dict:
  """The model and vocab sections of a training config, as JSON-ready dicts; the code order is the
  concrete one ("from_init" resolved: mio_jax/train/code_order.py), so readers need no init."""
  from mio_jax.train.code_order import concrete_vocab  # it reads run configs with this module

  model_fields = {f.name for f in ModelConfig.config_fields()}
  model = {k: v for k, v in _plain(config.model).items() if k in model_fields}
  vocab = {k: v for k, v in concrete_vocab(config).items() if k in _VOCAB_KEYS}
  if vocab.get("text_model"):  # recorded absolute: the export may run from another directory
    vocab["text_model"] = storage.as_str(vocab["text_model"])
  if model.get("image_codebook"):
    model["image_codebook"] = storage.as_str(model["image_codebook"])
  out = {"model": model, "vocab": vocab}
  data = config.get("data") if hasattr(config, "get") else None
  if data is not None and "template_set" in data:
    out["data"] = {"template_set": data["template_set"]}
    if "image_tokens" in data:
      out["data"]["image_tokens"] = int(data["image_tokens"])
  return out


def run_template_set(run: dict | None) -> str:
  """The template set a run trained with; runs recorded before the key existed used the paper's."""
  return ((run or {}).get("data") or {}).get("template_set", "paper")


def run_image_tokens(run: dict | None) -> int:
  """Codes per image block a run trained with; runs recorded before the key existed: 256 (VQGAN)."""
  return int(((run or {}).get("data") or {}).get("image_tokens", 256))


def save_run_config(workdir: str, config) -> str:
  """Writes WORKDIR/model_config.json (process 0 should call it; it is small and idempotent)."""
  root = storage.as_path(workdir)
  root.mkdir(parents=True, exist_ok=True)
  path = root / RUN_CONFIG
  storage.atomic_write_text(path, json.dumps(run_config_dict(config), indent=2, sort_keys=True))
  return os.fspath(path)


def resolve_init_from(config) -> str:
  """Where a stage's parameters start: config.init_from, else runs_dir/previous_run when both set.

  Stage configs name their predecessor (`previous_run`: "stage1" for stage 2, ...), so a chain
  needs only `--config.runs_dir=RUNS` with each stage's workdir at RUNS/stageN (docs/export.md).
  """
  if config.init_from:
    return config.init_from
  runs_dir, previous = config.runs_dir, config.previous_run
  return os.path.join(runs_dir, previous) if runs_dir and previous else ""


def check_init_vocab(config, init_from: str, key: str) -> None:
  """The run's code layout must be the one `init_from` was trained or imported with (its
  model_config.json, when it has one): else every image and speech id would mean another code.
  A text-only start (an import with text_size only) has no codes to disagree on. code_order
  "from_init" takes the recorded one, so only an explicit order can disagree."""
  saved = (find_run_config(init_from) or {}).get("vocab") or {}
  if "image_codes" not in saved:  # text only: the codes start new whatever their layout
    return
  for name in ("image_codes", "speech_codebook", "speech_layers", "code_order"):
    if name in saved and saved[name] != config.vocab[name] and config.vocab[name] != FROM_INIT:
      hint = " (or from_init, the default, to take it from there)" if name == "code_order" else ""
      raise ValueError(f"config.vocab.{name}={config.vocab[name]!r}, but {key}={init_from!r} has "
                       f"{saved[name]!r} (its {RUN_CONFIG}): pass --config.vocab.{name}={saved[name]}{hint}")


def find_run_config(path: str, levels: int = 4) -> dict | None:
  """model_config.json in `path` or up to `levels` parents (params -> step -> checkpoints -> workdir)."""
  path = storage.as_path(path)
  for _ in range(levels + 1):
    candidate = path / RUN_CONFIG
    if candidate.is_file():
      try:
        return json.loads(candidate.read_text())
      except json.JSONDecodeError as e:
        raise ValueError(f"{candidate}: not valid JSON: {e}") from e
    parent = path.parent
    if parent == path or os.fspath(parent).rstrip("/").endswith(":"):  # "/", or "gs://" above a bucket
      break
    path = parent
  return None
