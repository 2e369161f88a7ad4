"""The Llama-style decoder: embedding, a scanned stack of blocks, final norm, untied LM head.

    h = x + Attention(RMSNorm(x));  y = h + MLP(RMSNorm(h))

Blocks are created under `nnx.vmap` so their parameters are stacked on a leading `layers` axis, and
applied with `nnx.scan` (one compiled block however deep the model), each wrapped in `nnx.remat`
with the policy named in config.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name
from flax import nnx

from mio_jax.config.keys import ConfigError, check_known
from mio_jax.model.attention import AttentionKernel, attention, attention_kernel
from mio_jax.model.layers import MLP, Embedding, RMSNorm, fan_in_init, param, rotary_embedding
from mio_jax.model.vocab_padding import mask_padded_logits
from mio_jax.parallel.rules import constrain, kv_head_repeats

# What each block keeps for the backward pass; the rest is recomputed. Per-chip memory of each for
# MIO-7B on v5p-128 is in docs/scaling.md ("Remat policies").
REMAT_POLICIES = {
    "none": None,  # keep every activation: fastest, most memory
    "dots": jax.checkpoint_policies.checkpoint_dots,  # keep every matmul output
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    # keep the q/k/v projections and the attention output (recompute the MLP and the norms)
    "save_qkv_out": jax.checkpoint_policies.save_only_these_names("qkv", "attn_out"),
    "save_qkv": jax.checkpoint_policies.save_only_these_names("qkv"),  # keep q/k/v only
    "full": jax.checkpoint_policies.nothing_saveable,  # keep only the block's input
}


# config.model keys read by the attention kernels, not by the model (mio_jax/kernels/block_sizes.py).
KERNEL_KEYS = ("attention_blocks",)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  vocab_size: int
  embed_dim: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  mlp_dim: int
  norm_eps: float = 1e-5
  rope_theta: float = 5_000_000.0
  dtype: str = "bfloat16"
  param_dtype: str = "float32"
  attention_impl: str = "xla"
  remat_policy: str = "dots"
  scan_layers: bool = True
  # The tokenizer's ids, when vocab_size is padded for the hardware (0: not padded); the logits of
  # ids from here to vocab_size are masked (mio_jax/model/vocab_padding.py).
  unpadded_vocab_size: int = 0
  # Training loss over chunks of this many tokens per row, never holding the whole logits
  # (mio_jax/train/chunked_loss.py); 0: the plain loss over the whole logits.
  loss_chunk: int = 0
  # Two graph rewrites that help XLA CPU only (docs/benchmarks.md, "Train step"): gate and up as one
  # matmul over stacked kernels, and an LM head whose weight gradient reads the logits gradient in
  # place. Accelerator presets leave them off: their step is plain autodiff.
  cpu_tuned_matmuls: bool = False

  @property
  def used_vocab_size(self) -> int:
    """How many ids the model can predict: the tokenizer's, without the padding."""
    return self.unpadded_vocab_size or self.vocab_size

  @classmethod
  def from_config(cls, cfg) -> "ModelConfig":
    """config.model, or a run's saved model_config.json: a key that is neither a field nor one of
    KERNEL_KEYS, or a missing field without a default, is a one-line ConfigError naming it. Fields
    with defaults may be absent (configs saved before they existed); a training config names them
    all (mio_jax/config/training.py)."""
    fields, values = dataclasses.fields(cls), dict(cfg)
    check_known(values, [f.name for f in fields] + list(KERNEL_KEYS), "config.model")
    for f in fields:
      if f.name not in values and f.default is dataclasses.MISSING:
        raise ConfigError(f"config.model.{f.name} is missing")
    return cls(**{f.name: values[f.name] for f in fields if f.name in values})

  def num_params(self, include_embedding: bool = True) -> int:
    e, h, k, d, m = self.embed_dim, self.num_heads, self.num_kv_heads, self.head_dim, self.mlp_dim
    per_layer = e * d * (2 * h + 2 * k) + 3 * e * m + 2 * e
    total = self.num_layers * per_layer + e
    if include_embedding:
      total += 2 * self.vocab_size * e
    return total


class Attention(nnx.Module):
  def __init__(self, cfg: ModelConfig, kernel: AttentionKernel, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.kernel = kernel
    e, h, k, d = cfg.embed_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    pd = jnp.dtype(cfg.param_dtype)
    self.wq = param(rngs, fan_in_init(e), (e, h, d), ("embed", "heads", "head_dim"), pd)
    self.wk = param(rngs, fan_in_init(e), (e, k, d), ("embed", "kv_heads", "head_dim"), pd)
    self.wv = param(rngs, fan_in_init(e), (e, k, d), ("embed", "kv_heads", "head_dim"), pd)
    self.wo = param(rngs, fan_in_init(h * d), (h, d, e), ("heads", "head_dim", "embed"), pd)

  def __call__(self, x, segment_ids, positions, cache=None):
    """With `cache` = (k_cache, v_cache, cache_segment_ids, index) (decoding), writes this chunk's
    k/v at slot `index` and returns (out, (k_cache, v_cache)); cache_segment_ids already hold it."""
    cfg, dt = self.cfg, jnp.dtype(self.cfg.dtype)
    q = jnp.einsum("bte,ehd->bthd", x, self.wq[...].astype(dt))
    k = jnp.einsum("bte,ehd->bthd", x, self.wk[...].astype(dt))
    v = jnp.einsum("bte,ehd->bthd", x, self.wv[...].astype(dt))
    q = constrain(rotary_embedding(q, positions, cfg.rope_theta), ("batch", "length", "act_heads", None))
    k = rotary_embedding(k, positions, cfg.rope_theta)
    if cache is None and (repeats := kv_head_repeats(cfg.num_kv_heads)) > 1:
      # Fewer KV heads than tensor shards: each shard gets a copy of the one its query heads read.
      k, v = jnp.repeat(k, repeats, axis=2), jnp.repeat(v, repeats, axis=2)
    k = constrain(k, ("batch", "length", "act_kv_heads", None))
    v = constrain(v, ("batch", "length", "act_kv_heads", None))
    q, k, v = (checkpoint_name(a, "qkv") for a in (q, k, v))
    if cache is None:
      kernel = self.kernel
      out = attention(q, k, v, segment_ids, causal=True, impl=kernel.impl, backend=kernel.backend,
                      blocks=kernel.blocks)
    else:
      k_cache, v_cache, cache_segment_ids, index = cache
      k = jax.lax.dynamic_update_slice(k_cache, k.astype(k_cache.dtype), (0, index, 0, 0))
      v = jax.lax.dynamic_update_slice(v_cache, v.astype(v_cache.dtype), (0, index, 0, 0))
      # Causal from the slot offset; unwritten slots are excluded by the causal mask.
      out = attention(q, k, v, (segment_ids, cache_segment_ids), causal=True, impl="xla", q_offset=index)
    out = checkpoint_name(out, "attn_out")
    out = jnp.einsum("bthd,hde->bte", out, self.wo[...].astype(dt))
    out = constrain(out, ("batch", "residual_length", "act_embed"))
    return out if cache is None else (out, (k, v))


class DecoderBlock(nnx.Module):
  def __init__(self, cfg: ModelConfig, kernel: AttentionKernel, *, rngs: nnx.Rngs):
    pd, dt = jnp.dtype(cfg.param_dtype), jnp.dtype(cfg.dtype)
    self.attn_norm = RMSNorm(cfg.embed_dim, eps=cfg.norm_eps, param_dtype=pd, rngs=rngs)
    self.attn = Attention(cfg, kernel, rngs=rngs)
    self.mlp_norm = RMSNorm(cfg.embed_dim, eps=cfg.norm_eps, param_dtype=pd, rngs=rngs)
    self.mlp = MLP(cfg.embed_dim, cfg.mlp_dim, dtype=dt, param_dtype=pd,
                   stacked_gate_up=cfg.cpu_tuned_matmuls, rngs=rngs)

  def __call__(self, x, segment_ids, positions, cache=None):
    if cache is None:
      x = x + self.attn(self.attn_norm(x), segment_ids, positions)
      return x + self.mlp(self.mlp_norm(x))
    out, kv = self.attn(self.attn_norm(x), segment_ids, positions, cache)
    x = x + out
    return x + self.mlp(self.mlp_norm(x)), kv


class Transformer(nnx.Module):
  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs, kernel: AttentionKernel | None = None):
    """`kernel`: the attention to trace with (default: cfg.attention_impl on jax's backend, with that
    backend's tiles); an ahead-of-time compile for another backend passes its own."""
    if cfg.remat_policy not in REMAT_POLICIES:
      raise ValueError(f"config.model.remat_policy={cfg.remat_policy!r} is not one of {sorted(REMAT_POLICIES)}")
    self.cfg = cfg
    kernel = kernel or attention_kernel(cfg.attention_impl)
    pd, dt = jnp.dtype(cfg.param_dtype), jnp.dtype(cfg.dtype)
    self.embed = Embedding(cfg.vocab_size, cfg.embed_dim, dtype=dt, param_dtype=pd, rngs=rngs)

    @nnx.split_rngs(splits=cfg.num_layers)
    @nnx.vmap(in_axes=0, out_axes=0)
    def make_blocks(rngs):
      return DecoderBlock(cfg, kernel, rngs=rngs)

    self.blocks = make_blocks(rngs)
    self.final_norm = RMSNorm(cfg.embed_dim, eps=cfg.norm_eps, param_dtype=pd, rngs=rngs)
    self.lm_head = param(rngs, fan_in_init(cfg.embed_dim), (cfg.embed_dim, cfg.vocab_size),
                         ("embed", "vocab"), pd)

  def hidden_states(self, ids: jax.Array, segment_ids: jax.Array, positions: jax.Array) -> jax.Array:
    """Final-norm hidden states [batch, length, embed] for token ids [batch, length]."""
    x = self.embed(ids)
    policy = REMAT_POLICIES[self.cfg.remat_policy]

    def apply_block(x, block):
      return block(x, segment_ids, positions)

    if self.cfg.remat_policy != "none":
      apply_block = nnx.remat(apply_block, policy=policy, prevent_cse=not self.cfg.scan_layers)
    if self.cfg.scan_layers:
      x = nnx.scan(apply_block, in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)(x, self.blocks)
    else:
      for i in range(self.cfg.num_layers):
        x = apply_block(x, _layer(self.blocks, i))
    # Whole rows again for the LM head, whose vocabulary is what the tensor axis splits there.
    return constrain(self.final_norm(x), ("batch", "length", "act_embed"))

  def logits(self, hidden: jax.Array) -> jax.Array:
    kernel = self.lm_head[...].astype(hidden.dtype)
    if self.cfg.cpu_tuned_matmuls:
      out = lm_head_cpu(hidden, kernel)
    else:
      out = jnp.einsum("bte,ev->btv", hidden, kernel)
    if self.cfg.used_vocab_size < self.cfg.vocab_size:
      out = mask_padded_logits(out, self.cfg.used_vocab_size)
    return constrain(out, ("batch", "length", "act_vocab"))

  def __call__(self, ids, segment_ids, positions) -> jax.Array:
    return self.logits(self.hidden_states(ids, segment_ids, positions))

  def decode(self, ids, segment_ids, positions, cache: dict) -> tuple[jax.Array, dict]:
    """Logits for a chunk `ids` [batch, t] placed at cache slot cache["index"], and the new cache.

    cache (mio_jax.generate.decode.init_cache): "k", "v" [layers, batch, slots, kv_heads, head_dim],
    "segment_ids" [batch, slots] (0 = unwritten), "index" int32 scalar (next free slot).
    """
    index = cache["index"]
    kv_segment_ids = jax.lax.dynamic_update_slice(cache["segment_ids"], segment_ids, (0, index))

    def apply_block(x, block, k, v):
      x, kv = block(x, segment_ids, positions, (k, v, kv_segment_ids, index))
      return x, kv

    x = self.embed(ids)
    x, (k, v) = nnx.scan(apply_block, in_axes=(nnx.Carry, 0, 0, 0), out_axes=(nnx.Carry, 0))(
        x, self.blocks, cache["k"], cache["v"])
    logits = self.logits(self.final_norm(x))
    return logits, {"k": k, "v": v, "segment_ids": kv_segment_ids, "index": index + ids.shape[1]}


@jax.custom_vjp
def lm_head_cpu(hidden: jax.Array, kernel: jax.Array) -> jax.Array:
  """hidden [batch, length, embed] @ kernel [embed, vocab]; the backward is autodiff's, reordered
  for XLA CPU (config.model.cpu_tuned_matmuls)."""
  return jnp.einsum("bte,ev->btv", hidden, kernel)


def _lm_head_fwd(hidden, kernel):
  return lm_head_cpu(hidden, kernel), (hidden, kernel)


def _lm_head_bwd(residuals, d_logits):
  hidden, kernel = residuals
  d_hidden = jnp.einsum("btv,ev->bte", d_logits, kernel)
  # The kernel gradient as [embed, tokens] @ [tokens, vocab]: XLA CPU then reads the [tokens, vocab]
  # logits gradient where it lies. Autodiff's operand order made it transpose that (largest) array
  # first: ~0.3 s of a 40M-preset step on one core (docs/benchmarks.md, "Train step").
  tokens = hidden.reshape(-1, hidden.shape[-1]).T
  d_kernel = jnp.einsum("et,tv->ev", tokens, d_logits.reshape(-1, d_logits.shape[-1]))
  return d_hidden, d_kernel.astype(kernel.dtype)


lm_head_cpu.defvjp(_lm_head_fwd, _lm_head_bwd)


def _layer(blocks: DecoderBlock, i: int) -> DecoderBlock:
  """Block i of the stacked blocks, for the unrolled path (scan_layers=False)."""
  graphdef, state = nnx.split(blocks)
  return nnx.merge(graphdef, jax.tree.map(lambda a: a[i], state))
