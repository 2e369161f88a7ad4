"""Export of a model with UniCode²'s visual codebook: a plain transformers Llama whose logits are ours."""

import dataclasses
import json
import os

import numpy as np
import pytest

from export_helpers import (TINY, TINY_VOCAB, assert_logits_match, load_hf_model, random_params, run_config,
                            save_our_checkpoint, shard_over_devices)
from mio_jax.export.to_hf import export
from mio_jax.train.run_config import save_run_config
from mio_jax.vocab import Vocabulary

VOCAB = Vocabulary.from_config(dict(TINY_VOCAB, text_model=None))  # image ids 1006..9197


def cascade_config(embedding: str, head: str):
  return dataclasses.replace(TINY, image_embedding=embedding, image_head=head, image_codebook="unused.npy",
                             image_code_dim=16, image_projector_dim=48, image_base=VOCAB.image_base,
                             image_codes=VOCAB.image_codes)


# The cascade with the tied head compiles the codebook pass (~10 s on 2 cores): slow set; the frozen
# map and the tied head (on the table) stay in the default run.
@pytest.mark.parametrize("embedding,head", [pytest.param("cascade", "tied", marks=pytest.mark.slow),
                                            ("frozen", "separate"), ("table", "tied")])
def test_exported_llama_logits_equal_ours(tmp_path, embedding, head):
  cfg = cascade_config(embedding, head)
  params = random_params(cfg, seed=3)
  rng = np.random.default_rng(0)
  visual = params.get("visual", {})
  for name, scale in (("frozen_codebook", 1.0), ("residual", 0.5)):  # the init's zeros: make them count
    if name in visual:
      visual[name] = scale * rng.standard_normal(visual[name].shape).astype(np.float32)
  workdir = str(tmp_path / "run")
  step_dir = save_our_checkpoint(workdir, shard_over_devices(params))
  save_run_config(workdir, run_config(cfg, TINY_VOCAB))
  out = str(tmp_path / "hf")
  export(step_dir, out, with_tokenizer=False)

  with open(os.path.join(out, "config.json")) as f:
    hf = json.load(f)
  assert hf["vocab_size"] == 13294 and not hf["tie_word_embeddings"]  # a plain Llama, every id a row
  model = load_hf_model(out)
  assert not any("visual" in name for name, _ in model.named_parameters())
  assert_logits_match(params, cfg, model, np.random.default_rng(1))  # ids over text, image, speech
