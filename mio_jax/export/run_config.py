"""`model_config.json` next to a run's checkpoints: the model and vocabulary config, so an export
(or the next stage) rebuilds the network without the original config file.

    WORKDIR/model_config.json   {"model": {...ModelConfig fields}, "vocab": {...config.vocab}}

The train loop writes it once at start (`save_run_config(workdir, config)`); `find_run_config`
finds it from a workdir, its checkpoints dir, a step dir or a params dir.
"""

from __future__ import annotations

import dataclasses
import json
import os

from mio_jax.model.transformer import ModelConfig

RUN_CONFIG = "model_config.json"
_VOCAB_KEYS = ("text_size", "text_model", "image_codes", "speech_codebook", "speech_layers", "code_order")


def _plain(cfg) -> dict:
  return cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)


def run_config_dict(config) -> dict:
  """The model and vocab sections of a training config, as JSON-ready dicts."""
  model_fields = {f.name for f in dataclasses.fields(ModelConfig)}
  model = {k: v for k, v in _plain(config.model).items() if k in model_fields}
  vocab = {k: v for k, v in _plain(config.vocab).items() if k in _VOCAB_KEYS}
  if vocab.get("text_model"):  # recorded absolute: the export may run from another directory
    vocab["text_model"] = os.path.abspath(vocab["text_model"])
  return {"model": model, "vocab": vocab}


def save_run_config(workdir: str, config) -> str:
  """Writes WORKDIR/model_config.json (process 0 should call it; it is small and idempotent)."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(os.path.abspath(workdir), RUN_CONFIG)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(run_config_dict(config), f, indent=2, sort_keys=True)
  os.replace(tmp, path)
  return path


def resolve_init_from(config) -> str:
  """Where a stage's parameters start: config.init_from, else runs_dir/previous_run when both set.

  Stage configs name their predecessor (`previous_run`: "stage1" for stage 2, ...), so a chain
  needs only `--config.runs_dir=RUNS` with each stage's workdir at RUNS/stageN (docs/export.md).
  """
  if config.get("init_from"):
    return config.init_from
  runs_dir, previous = config.get("runs_dir", ""), config.get("previous_run", "")
  return os.path.join(runs_dir, previous) if runs_dir and previous else ""


def find_run_config(path: str, levels: int = 4) -> dict | None:
  """model_config.json in `path` or up to `levels` parents (params -> step -> checkpoints -> workdir)."""
  path = os.path.abspath(path)
  for _ in range(levels + 1):
    candidate = os.path.join(path, RUN_CONFIG)
    if os.path.isfile(candidate):
      with open(candidate) as f:
        try:
          return json.load(f)
        except json.JSONDecodeError as e:
          raise ValueError(f"{candidate}: not valid JSON: {e}") from e
    path = os.path.dirname(path)
  return None
