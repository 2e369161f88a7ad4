"""A tiny random transformers LlamaForCausalLM and the same weights as our Transformer: the oracle of
the beam-search tests (Hugging Face's `generate` is what MIO's infer.py decodes with)."""

from __future__ import annotations

import numpy as np
import torch
from flax import nnx

from mio_jax.export import mapping
from mio_jax.model.transformer import ModelConfig, Transformer


def tiny_pair(vocab_size: int, seed: int = 0) -> tuple[object, Transformer]:
  """(transformers model in eval mode, our model) with identical float32 weights."""
  from transformers import LlamaConfig, LlamaForCausalLM

  cfg = ModelConfig(vocab_size=vocab_size, embed_dim=32, num_layers=2, num_heads=4, num_kv_heads=2,
                    head_dim=8, mlp_dim=64, dtype="float32", remat_policy="none")
  torch.manual_seed(seed)
  hf_cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=cfg.embed_dim, intermediate_size=cfg.mlp_dim,
                       num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
                       num_key_value_heads=cfg.num_kv_heads, head_dim=cfg.head_dim, rms_norm_eps=cfg.norm_eps,
                       rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
                       tie_word_embeddings=False, initializer_range=0.3, bos_token_id=1, eos_token_id=2,
                       pad_token_id=0)
  hf = LlamaForCausalLM(hf_cfg).eval()
  tensors = {k: v.detach().numpy().astype(np.float32) for k, v in hf.state_dict().items()}
  shapes = mapping.our_shapes(cfg)
  params: dict = {}
  for entry in mapping.PARAM_MAP:
    mapping.set_path(params, entry.ours, mapping.from_hf_tensors(entry, tensors.__getitem__, shapes[entry.ours]))
  ours = Transformer(cfg, rngs=nnx.Rngs(0))
  state = nnx.state(ours, nnx.Param)
  state.replace_by_pure_dict(params)
  nnx.update(ours, state)
  return hf, ours
