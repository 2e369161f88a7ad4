"""The Llama-style decoder: embedding, a scanned stack of blocks, final norm, untied LM head.

    h = x + Attention(RMSNorm(x));  y = h + MLP(RMSNorm(h))

Blocks are created under `nnx.vmap` so their parameters are stacked on a leading `layers` axis, and
applied with `nnx.scan` (one compiled block however deep the model), each wrapped in `nnx.remat`
with the policy named in config. Image-code ids may instead be embedded (and, tied, scored) through
UniCode²'s frozen-codebook cascade (config.model.image_embedding, image_head: visual_cascade.py).
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
from mio_jax.model.visual_cascade import VisualCodebook, check_image_settings, codebook_rows
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
# A ModelConfig field with this metadata is no config key: from_config sets it from config.vocab.
DERIVED = {"derived": True}


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
  # Image-code ids (UniCode², mio_jax/model/visual_cascade.py): "table" (MIO's rows), "frozen"
  # (frozen centroids through a trainable linear map) or "cascade" (a projector MLP plus a residual
  # table); the centroids file, float32 [image_codes, image_code_dim]; the projector's hidden width
  # (0: embed_dim); the image ids' logits from the LM head's own columns ("separate") or from the
  # same embeddings ("tied").
  image_embedding: str = "table"
  image_codebook: str = ""
  image_code_dim: int = 0
  image_projector_dim: int = 0
  image_head: str = "separate"
  # The vocabulary's image ids [image_base, image_base + image_codes): set by from_config(cfg, vocab).
  image_base: int = dataclasses.field(default=0, metadata=DERIVED)
  image_codes: int = dataclasses.field(default=0, metadata=DERIVED)

  @property
  def uses_image_range(self) -> bool:
    """Whether the image ids are treated apart from the others (anything but MIO's plain layout)."""
    return self.image_embedding != "table" or self.image_head == "tied"

  @property
  def used_vocab_size(self) -> int:
    """How many ids the model can predict: the tokenizer's, without the padding."""
    return self.unpadded_vocab_size or self.vocab_size

  @classmethod
  def config_fields(cls) -> list[dataclasses.Field]:
    """The fields that are config.model keys (not the DERIVED ones)."""
    return [f for f in dataclasses.fields(cls) if not f.metadata.get("derived")]

  @classmethod
  def from_config(cls, cfg, vocab=None) -> "ModelConfig":
    """config.model, or a run's saved model_config.json: a key that is neither a field nor one of
    KERNEL_KEYS, or a missing field without a default, is a one-line ConfigError naming it. Fields
    with defaults may be absent (configs saved before they existed); a training config names them
    all (mio_jax/config/training.py). `vocab` (a mio_jax.vocab.Vocabulary) gives the image ids'
    range, which a model with image_embedding other than "table" or image_head "tied" needs."""
    fields, values = cls.config_fields(), dict(cfg)
    check_known(values, [f.name for f in fields] + list(KERNEL_KEYS), "config.model")
    for f in fields:
      if f.name not in values and f.default is dataclasses.MISSING:
        raise ConfigError(f"config.model.{f.name} is missing")
    image = dict(image_base=vocab.image_base, image_codes=vocab.image_codes) if vocab is not None else {}
    return cls(**{f.name: values[f.name] for f in fields if f.name in values}, **image)

  def num_params(self, include_embedding: bool = True) -> int:
    """Parameters stored, the frozen codebook included."""
    e, h, k, d, m = self.embed_dim, self.num_heads, self.num_kv_heads, self.head_dim, self.mlp_dim
    per_layer = e * d * (2 * h + 2 * k) + 3 * e * m + 2 * e
    total = self.num_layers * per_layer + e
    if include_embedding:
      total += (self.embed_rows + self.head_columns) * e + self._visual_params()
    return total

  @property
  def embed_rows(self) -> int:
    """Rows of the ordinary embedding table: every id, or all but the image ids'."""
    return self.vocab_size - (self.image_codes if self.image_embedding != "table" else 0)

  @property
  def head_columns(self) -> int:
    """Columns of the LM head's own kernel: every id, or all but the tied image ids'."""
    return self.vocab_size - (self.image_codes if self.image_head == "tied" else 0)

  def _visual_params(self) -> int:
    if self.image_embedding == "table":
      return 0
    rows, c, e = codebook_rows(self.image_codes), self.image_code_dim, self.embed_dim
    if self.image_embedding == "frozen":
      return rows * c + c * e
    hidden = self.image_projector_dim or e
    return rows * c + c * hidden + hidden * e + rows * e


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
    check_image_settings(cfg, cfg.image_codes)  # ModelConfig.from_config(cfg, vocab) sets image_codes
    self.cfg = cfg
    kernel = kernel or attention_kernel(cfg.attention_impl)
    pd, dt = jnp.dtype(cfg.param_dtype), jnp.dtype(cfg.dtype)
    self.embed = Embedding(cfg.embed_rows, cfg.embed_dim, dtype=dt, param_dtype=pd, rngs=rngs)

    @nnx.split_rngs(splits=cfg.num_layers)
    @nnx.vmap(in_axes=0, out_axes=0)
    def make_blocks(rngs):
      return DecoderBlock(cfg, kernel, rngs=rngs)

    self.blocks = make_blocks(rngs)
    self.final_norm = RMSNorm(cfg.embed_dim, eps=cfg.norm_eps, param_dtype=pd, rngs=rngs)
    self.lm_head = param(rngs, fan_in_init(cfg.embed_dim), (cfg.embed_dim, cfg.head_columns),
                         ("embed", "vocab"), pd)
    if cfg.image_embedding != "table":
      self.visual = VisualCodebook(cfg, rngs=rngs)

  def embed_ids(self, ids: jax.Array) -> jax.Array:
    """Input embeddings [batch, length, embed]: the table's rows, image ids through the visual
    cascade when config.model.image_embedding asks (mio_jax/model/visual_cascade.py)."""
    cfg = self.cfg
    if cfg.image_embedding == "table":
      return self.embed(ids)
    code = ids - cfg.image_base
    is_image = (code >= 0) & (code < cfg.image_codes)
    # The table holds every id but the image ones: ids after the image block move down by its size.
    rows = jnp.where(code >= cfg.image_codes, ids - cfg.image_codes, jnp.where(is_image, 0, ids))
    image = self.visual.embed(jnp.clip(code, 0, cfg.image_codes - 1))
    x = jnp.where(is_image[..., None], image, self.embed(rows))
    return constrain(x, ("batch", "residual_length", "act_embed"))

  def head_kernel(self) -> jax.Array:
    """The LM head's kernel [embed, vocab_size] in the param dtype: the lm_head parameter, or with
    image_head "tied" its columns with the image ids' E_eff spliced in at image_base."""
    return self.head(None)[1]

  def head(self, hidden: jax.Array | None) -> tuple[jax.Array | None, jax.Array]:
    """(hidden, head_kernel()) for final-norm `hidden` that the kernel will score; tied to the
    visual cascade, the two pass an optimization barrier together (VisualCodebook.table)."""
    head = self.lm_head[...]
    cfg = self.cfg
    if cfg.image_head == "separate":
      return hidden, head
    base, codes = cfg.image_base, cfg.image_codes
    if cfg.image_embedding == "table":
      table = self.embed.table[...]
      if hidden is not None:  # ordered after the layer stack, as VisualCodebook.table explains
        hidden, table = jax.lax.optimization_barrier((hidden, table))
      image = table[base:base + codes]
    else:
      image, hidden = self.visual.table(codes, hidden)
    kernel = jnp.concatenate([head[:, :base], image.T.astype(head.dtype), head[:, base:]], axis=1)
    return hidden, constrain(kernel, ("embed", "vocab"))

  def hidden_states(self, ids: jax.Array, segment_ids: jax.Array, positions: jax.Array) -> jax.Array:
    """Final-norm hidden states [batch, length, embed] for token ids [batch, length]."""
    x = self.embed_ids(ids)
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

  def logits(self, hidden: jax.Array, kernel: jax.Array | None = None) -> jax.Array:
    """Logits [batch, length, vocab] of final-norm hidden states; `kernel`: head_kernel(), when
    the caller already has it."""
    if kernel is None:
      hidden, kernel = self.head(hidden)
    kernel = kernel.astype(hidden.dtype)
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
    "segment_ids" [batch, slots] (0 = unwritten), "index" int32 scalar (next free slot). With
    image_head "tied" the returned cache also holds "head", the LM head's kernel computed once at
    prefill (E_eff over the whole codebook is not recomputed for every token).
    """
    index = cache["index"]
    head = cache.get("head")
    kv_segment_ids = jax.lax.dynamic_update_slice(cache["segment_ids"], segment_ids, (0, index))

    def apply_block(x, block, k, v):
      x, kv = block(x, segment_ids, positions, (k, v, kv_segment_ids, index))
      return x, kv

    x = self.embed_ids(ids)
    x, (k, v) = nnx.scan(apply_block, in_axes=(nnx.Carry, 0, 0, 0), out_axes=(nnx.Carry, 0))(
        x, self.blocks, cache["k"], cache["v"])
    hidden = self.final_norm(x)
    if head is None and self.cfg.image_head == "tied":
      hidden, head = self.head(hidden)
      head = head.astype(self.cfg.dtype)
    logits = self.logits(hidden, head)
    new_cache = {"k": k, "v": v, "segment_ids": kv_segment_ids, "index": index + ids.shape[1]}
    return logits, new_cache if head is None else {**new_cache, "head": head}


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
