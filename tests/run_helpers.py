"""A launch script as a module, and a tiny run saved as the train loop saves it (shared by the CLI tests)."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import sys

import ml_collections
import orbax.checkpoint as ocp

from mio_jax.model.transformer import ModelConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def launch_module(name: str):
  """launch/<name>.py as a module, so tests call its functions in-process. The scripts point
  sys.path[0] at the repo root (launch/ itself shadows tokenize); that is undone here."""
  spec = importlib.util.spec_from_file_location(f"launch_{name}", os.path.join(REPO, "launch", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  saved = list(sys.path)
  spec.loader.exec_module(module)
  sys.path[:] = saved
  return module


def save_our_checkpoint(workdir: str, params: dict, step: int = 7) -> str:
  """Params as the train loop saves them (WORKDIR/checkpoints/<step>/params)."""
  from mio_jax.train import checkpoint as ckpt

  manager = ckpt.make_manager(workdir, keep=1, async_save=False)
  manager.save(step, args=ocp.args.Composite(params=ocp.args.StandardSave(params)))
  manager.wait_until_finished()
  manager.close()
  return os.path.join(ckpt.checkpoint_dir(workdir), str(step))


def run_config(cfg: ModelConfig, vocab: dict) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({"model": dataclasses.asdict(cfg), "vocab": dict(vocab)})
