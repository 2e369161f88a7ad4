"""Shared pieces of the export tests: tiny configs, our checkpoints, our and transformers' logits."""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from mio_jax.model.transformer import ModelConfig, Transformer
from run_helpers import launch_module, run_config, save_our_checkpoint  # noqa: F401 (re-exported)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MINI_TEXT_MODEL = os.path.join(REPO, "data", "vocab", "mini.model")
# The smoke vocabulary: 1000 text ids + 6 specials + 8192 image codes + 4 x 1024 speech codes.
TINY_VOCAB = dict(text_size=1000, text_model=MINI_TEXT_MODEL, image_codes=8192, speech_codebook=1024,
                  speech_layers=4, code_order="image_first")
TINY = ModelConfig(vocab_size=13294, embed_dim=64, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16,
                   mlp_dim=192, norm_eps=1e-5, rope_theta=5_000_000.0, dtype="float32",
                   attention_impl="xla", remat_policy="none")
M40 = dataclasses.replace(TINY, vocab_size=16384, embed_dim=512, num_layers=8, num_heads=8,
                          num_kv_heads=2, head_dim=64, mlp_dim=1408)
M40_VOCAB = dict(TINY_VOCAB, text_size=8186, text_model=None, image_codes=4096)


def random_params(cfg: ModelConfig, seed: int) -> dict:
  """Our init, with the RMSNorm scales made non-trivial too (init is all ones)."""
  params = nnx.to_pure_dict(nnx.state(Transformer(cfg, rngs=nnx.Rngs(seed)), nnx.Param))
  rng = np.random.default_rng(seed)

  def perturb(path, x):
    x = np.asarray(x)
    if path[-1].key == "scale":
      x = x + 0.2 * rng.standard_normal(x.shape).astype(x.dtype)
    return x
  return jax.tree_util.tree_map_with_path(perturb, params)


def shard_over_devices(params: dict) -> dict:
  """Each parameter split over all devices along its first evenly divisible axis (as fsdp does)."""
  mesh = jax.make_mesh((jax.device_count(),), ("fsdp",))

  def put(x):
    spec = [None] * x.ndim
    for axis, size in enumerate(x.shape):
      if size % jax.device_count() == 0:
        spec[axis] = "fsdp"
        break
    return jax.device_put(x, NamedSharding(mesh, P(*spec)))
  return jax.tree.map(put, params)


def packed_batch(rng: np.random.Generator, vocab: int, lengths: list[int], total: int):
  """One packed row: samples of `lengths` back to back (segments 1, 2, ...), padding 0 after."""
  ids, seg, pos = (np.zeros((1, total), np.int32) for _ in range(3))
  start, samples = 0, []
  for j, n in enumerate(lengths):
    tokens = rng.integers(0, vocab, n)
    ids[0, start:start + n], seg[0, start:start + n], pos[0, start:start + n] = tokens, j + 1, np.arange(n)
    samples.append((start, tokens))
    start += n
  return ids, seg, pos, samples


def our_logits(params: dict, cfg: ModelConfig, ids, seg, pos) -> np.ndarray:
  graphdef = nnx.split(nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0))))[0]
  model = nnx.merge(graphdef, jax.tree.map(jnp.asarray, params))
  with jax.default_matmul_precision("highest"):
    return np.asarray(model(jnp.asarray(ids), jnp.asarray(seg), jnp.asarray(pos)))


def make_hf_checkpoint(path, *, vocab_size, tie=False, seed=0):
  """A randomly initialised transformers Llama (norm weights randomised too), saved to `path`."""
  import torch
  from transformers import LlamaConfig, LlamaForCausalLM

  torch.manual_seed(seed)
  config = LlamaConfig(vocab_size=vocab_size, hidden_size=TINY.embed_dim, intermediate_size=TINY.mlp_dim,
                       num_hidden_layers=TINY.num_layers, num_attention_heads=TINY.num_heads,
                       num_key_value_heads=TINY.num_kv_heads, head_dim=TINY.head_dim,
                       rms_norm_eps=TINY.norm_eps, rope_parameters={"rope_type": "default", "rope_theta": 5e6},
                       tie_word_embeddings=tie, initializer_range=0.2)
  model = LlamaForCausalLM(config)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("norm.weight"):
        p.add_(0.2 * torch.randn_like(p))
  model.save_pretrained(path)
  return str(path)


def read_params(out: str) -> dict:
  """An imported (or any) checkpoint's parameters as host arrays, one partial restore each."""
  from mio_jax.export.mapping import PARAM_MAP, set_path
  from mio_jax.export.to_hf import read_param
  from mio_jax.train.checkpoint import resolve_params_dir

  params_dir = resolve_params_dir(out)
  params = {}
  for entry in PARAM_MAP:
    set_path(params, entry.ours, read_param(params_dir, entry.ours))
  return params


def load_hf_model(hf_dir: str):
  import torch
  from transformers import AutoModelForCausalLM

  model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
  return model.eval()


def hf_logits(model, ids: np.ndarray) -> np.ndarray:
  """transformers' logits for unpacked rows [batch, length] (positions 0..length-1)."""
  import torch

  with torch.no_grad():
    return model(input_ids=torch.as_tensor(np.asarray(ids), dtype=torch.long)).logits.numpy()


def assert_logits_match(params, cfg, hf_model, rng, *, atol=1e-4, length=24):
  """Unpacked rows and one packed row: ours vs transformers (each packed sample run alone)."""
  ids = rng.integers(0, cfg.vocab_size, (2, length)).astype(np.int32)
  ones = np.ones_like(ids)
  pos = np.broadcast_to(np.arange(length, dtype=np.int32), ids.shape)
  ours = our_logits(params, cfg, ids, ones, pos)
  theirs = hf_logits(hf_model, ids)
  np.testing.assert_allclose(ours, theirs, atol=atol, rtol=0)
  assert np.abs(theirs).max() > 10 * atol  # not trivially small

  ids, seg, pos, samples = packed_batch(rng, cfg.vocab_size, [length * 3 // 8, length // 4, length // 4], length)
  ours = our_logits(params, cfg, ids, seg, pos)
  for start, tokens in samples:
    alone = hf_logits(hf_model, tokens[None])[0]
    np.testing.assert_allclose(ours[0, start:start + len(tokens)], alone, atol=atol, rtol=0)
