"""A vocabulary padded for the hardware crosses the Hugging Face boundary unpadded, and comes back.

The tiny model's 13,294 ids padded to 13,312 (a multiple of 128): transformers must see 13,294 ids
and the logits of our padded model's first 13,294 columns.
"""

import dataclasses
import json
import os

import numpy as np

from export_helpers import (TINY, TINY_VOCAB, assert_logits_match, load_hf_model, random_params, run_config,
                            save_our_checkpoint)
from mio_jax.export.from_hf import import_hf
from mio_jax.export.safetensors_io import Reader
from mio_jax.export.to_hf import export, read_param
from mio_jax.train.checkpoint import resolve_params_dir
from mio_jax.train.run_config import save_run_config

PADDED = dataclasses.replace(TINY, vocab_size=13312, unpadded_vocab_size=13294)


def test_export_strips_the_padding_and_import_restores_it(tmp_path):
  params = random_params(PADDED, seed=5)
  params["lm_head"] = params["lm_head"].copy()
  params["lm_head"][:, 13294:] = 50.0  # would dominate every logit were it exported or unmasked
  workdir = str(tmp_path / "run")
  save_our_checkpoint(workdir, params)
  save_run_config(workdir, run_config(PADDED, TINY_VOCAB))
  out = str(tmp_path / "hf")
  export(workdir, out)

  with open(os.path.join(out, "config.json")) as f:
    assert json.load(f)["vocab_size"] == 13294
  reader = Reader(out)
  assert reader.get("model.embed_tokens.weight").shape == (13294, TINY.embed_dim)
  assert reader.get("lm_head.weight").shape == (13294, TINY.embed_dim)
  unpadded = dict(params, lm_head=params["lm_head"][:, :13294],
                  embed={"table": params["embed"]["table"][:13294]})
  hf_model = load_hf_model(out)
  assert_logits_match(unpadded, TINY, hf_model, np.random.default_rng(2))

  # And back: padded again with zero rows, the real rows exactly as exported.
  again = str(tmp_path / "imported")
  summary = import_hf(out, again, vocab_cfg=TINY_VOCAB, vocab_multiple=128)
  assert (summary["vocab_size"], summary["padded_vocab_size"]) == (13294, 13312)
  with open(os.path.join(again, "model_config.json")) as f:
    model = json.load(f)["model"]
  assert (model["vocab_size"], model["unpadded_vocab_size"]) == (13312, 13294)
  params_dir = resolve_params_dir(again)
  head, table = read_param(params_dir, "lm_head"), read_param(params_dir, "embed/table")
  assert head.shape == (TINY.embed_dim, 13312) and table.shape == (13312, TINY.embed_dim)
  np.testing.assert_array_equal(head[:, :13294], params["lm_head"][:, :13294])
  np.testing.assert_array_equal(table[:13294], params["embed"]["table"][:13294])
  assert not head[:, 13294:].any() and not table[13294:].any()
