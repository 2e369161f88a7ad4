"""One attention entry point for the whole codebase, with the dense XLA reference.

Shapes (batch-major, heads after sequence, as the projections produce them):
  q: [batch, q_len, num_heads, head_dim]
  k, v: [batch, kv_len, num_kv_heads, head_dim], num_heads % num_kv_heads == 0 (GQA)
  segment_ids: [batch, len] int32 when q_len == kv_len, or a pair (q_segment_ids, kv_segment_ids).
    Tokens attend only within their own segment id. Packing numbers samples 1, 2, ... and pads
    with 0, so padding attends only to padding and never leaks into a sample.
Returns [batch, q_len, num_heads, head_dim] in q's dtype.

Every implementation honours segment ids; one that cannot raises instead of dropping them.
The fused kernels (KERNELS) are imported by name when first used; none falls back silently: a named
kernel that cannot be imported or cannot run on the backend is a one-line error (`check_impl`, run
by config validation before compiling), and "auto" logs what it picked and what it skipped.
A model resolves its AttentionKernel (implementation, target backend, tiles) once, when built, and
passes it to every call: nothing here is read from module state while tracing.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import logging
from typing import Any, Protocol

import jax
import jax.numpy as jnp

SegmentIds = jax.Array | tuple[jax.Array, jax.Array]


class AttentionImpl(Protocol):
  def __call__(self, q: jax.Array, k: jax.Array, v: jax.Array, q_segment_ids: jax.Array,
               kv_segment_ids: jax.Array, *, causal: bool, backend: str, blocks: Any) -> jax.Array:
    ...


@dataclasses.dataclass(frozen=True)
class AttentionKernel:
  """The attention a model runs: a concrete implementation (never "auto"), the backend it lowers for
  (an ahead-of-time compile for a TPU traces on a CPU host), and the fused kernels' tiles
  (a mio_jax.kernels.BlockSizes; None: the backend's defaults)."""
  impl: str = "xla"
  backend: str = "cpu"
  blocks: Any = None


def attention_kernel(impl: str, backend: str | None = None, blocks: Any = None) -> AttentionKernel:
  """`impl` (a config.model.attention_impl, "auto" allowed) resolved for `backend` (default: jax's)."""
  backend = backend or jax.default_backend()
  return AttentionKernel(resolve_impl(impl, backend), backend, blocks)


log = logging.getLogger("mio_jax.model")

# Fused kernels: name -> (module, function, backends it runs on; on CPU in Pallas interpret mode).
KERNELS = {
    "pallas": ("mio_jax.kernels", "pallas_attention", ("tpu", "gpu", "cpu")),
    "splash": ("mio_jax.kernels", "splash_attention_impl", ("tpu", "cpu")),
    "cudnn": ("mio_jax.kernels.cudnn", "cudnn_attention", ("gpu",)),
}
# Per backend, the preferred implementation for impl="auto": the first that imports wins.
_AUTO_ORDER = {"tpu": ("splash", "pallas", "xla"), "gpu": ("pallas", "xla"), "cpu": ("xla",)}


class AttentionUnavailable(ValueError):
  pass


def available_impls() -> tuple[str, ...]:
  return ("auto",) + tuple(sorted((*KERNELS, "xla", "xla_blocked")))


def _impl_fn(name: str) -> AttentionImpl:
  if name in _REFERENCE:
    return _REFERENCE[name]
  if name not in KERNELS:
    raise AttentionUnavailable(f"unknown attention implementation {name!r}; choose one of "
                               f"{', '.join(available_impls())}")
  module, function, _ = KERNELS[name]
  try:
    return getattr(importlib.import_module(module), function)
  except ImportError as e:
    raise AttentionUnavailable(f"attention implementation {name!r} cannot be imported "
                               f"({module}: {type(e).__name__}: {e})") from None


def resolve_impl(impl: str, backend: str | None = None) -> str:
  """The concrete implementation name `impl` means on `backend` (default: jax's)."""
  if impl != "auto":
    _impl_fn(impl)
    return impl
  backend = backend or jax.default_backend()
  skipped = []
  for name in _AUTO_ORDER.get(backend, ("xla",)):
    try:
      _impl_fn(name)
    except AttentionUnavailable as e:
      skipped.append(str(e))
      continue
    _log_auto_choice(backend, name, tuple(skipped))
    return name
  raise AssertionError("unreachable: xla is always available")


@functools.cache
def _log_auto_choice(backend: str, name: str, skipped: tuple[str, ...]) -> None:
  for reason in skipped:
    log.warning("attention impl 'auto' on %s: skipped, %s", backend, reason)
  log.info("attention impl 'auto' on %s: %s", backend, name)


def check_impl(impl: str, backend: str) -> str:
  """The implementation `impl` resolves to on `backend`; AttentionUnavailable (one line, naming
  config.model.attention_impl) when it is unknown, cannot be imported, or cannot run there."""
  if impl not in available_impls():
    raise AttentionUnavailable(f"config.model.attention_impl={impl!r} is unknown; choose one of "
                               f"{', '.join(available_impls())}")
  try:
    name = resolve_impl(impl, backend)
  except AttentionUnavailable as e:
    raise AttentionUnavailable(f"config.model.attention_impl={impl!r}: {e}") from None
  runs_on = KERNELS[name][2] if name in KERNELS else (backend,)
  if backend not in runs_on:
    raise AttentionUnavailable(f"config.model.attention_impl={impl!r} cannot run on {backend} "
                               f"(it runs on {', '.join(runs_on)})")
  return name


def attention(q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: SegmentIds, *,
              causal: bool = True, impl: str = "xla", backend: str | None = None, blocks: Any = None,
              q_offset: int | jax.Array | None = None) -> jax.Array:
  """`backend` (default: jax's) is what a fused kernel lowers for, `blocks` its tiles (None: that
  backend's defaults). `q_offset` (decoding with a KV cache: queries start at that key slot) needs
  impl="xla"."""
  if isinstance(segment_ids, tuple):
    q_seg, kv_seg = segment_ids
  else:
    if q.shape[1] != k.shape[1]:
      raise ValueError("pass (q_segment_ids, kv_segment_ids) when q and kv lengths differ")
    q_seg = kv_seg = segment_ids
  if q.shape[2] % k.shape[2]:
    raise ValueError(f"num_heads={q.shape[2]} is not a multiple of num_kv_heads={k.shape[2]}")
  backend = backend or jax.default_backend()
  fn = _impl_fn(resolve_impl(impl, backend))
  if q_offset is None:
    return fn(q, k, v, q_seg, kv_seg, causal=causal, backend=backend, blocks=blocks)
  if fn is not xla_attention:
    raise ValueError(f"q_offset (KV-cache decoding) is supported by impl='xla' only, not {impl!r}")
  return xla_attention(q, k, v, q_seg, kv_seg, causal=causal, q_offset=q_offset)


def attention_mask(q_segment_ids: jax.Array, kv_segment_ids: jax.Array, *, causal: bool,
                   q_offset: int | jax.Array = 0) -> jax.Array:
  """Boolean [batch, q_len, kv_len]: same segment, and key position <= query position if causal.

  `q_offset` places the queries at the end of a longer key sequence (decoding with a KV cache).
  """
  mask = q_segment_ids[:, :, None] == kv_segment_ids[:, None, :]
  if causal:
    q_pos = jnp.arange(q_segment_ids.shape[1])[:, None] + q_offset
    kv_pos = jnp.arange(kv_segment_ids.shape[1])[None, :]
    mask &= (kv_pos <= q_pos)[None]
  return mask


def xla_attention(q, k, v, q_segment_ids, kv_segment_ids, *, causal: bool,
                  q_offset: int | jax.Array = 0, backend: str | None = None, blocks: Any = None) -> jax.Array:
  """Dense reference: scores in float32, softmax, weighted sum. GQA without repeating K/V."""
  mask = attention_mask(q_segment_ids, kv_segment_ids, causal=causal, q_offset=q_offset)
  return _masked_attention(q, k, v, mask)


def xla_blocked_attention(q, k, v, q_segment_ids, kv_segment_ids, *, causal: bool,
                          backend: str | None = None, blocks: Any = None) -> jax.Array:
  """The dense reference per block of queries, over only the keys up to the block's end.

  Causal self-attention masks every key after the block's last query, so those scores need not be
  computed: with 8 blocks this does 9/16 of the dense matmul and softmax work, exactly (the skipped
  scores would get zero probability). The CPU's best (no fused kernel there); lengths that do not
  split into 8 blocks, and non-causal calls, fall back to the dense reference.
  """
  t, n = q.shape[1], _QUERY_BLOCKS
  if not causal or t != k.shape[1] or t % n or t < 2 * n:
    return xla_attention(q, k, v, q_segment_ids, kv_segment_ids, causal=causal)
  size = t // n
  outs = []
  for lo in range(0, t, size):
    hi = lo + size
    mask = attention_mask(q_segment_ids[:, lo:hi], kv_segment_ids[:, :hi], causal=True, q_offset=lo)
    outs.append(_masked_attention(q[:, lo:hi], k[:, :hi], v[:, :hi], mask))
  return jnp.concatenate(outs, axis=1)


_QUERY_BLOCKS = 8


def _masked_attention(q, k, v, mask):
  """q [b, t, h, d] over k, v [b, s, kv_heads, d] where mask [b, t, s] allows."""
  b, t, h, d = q.shape
  kv_heads = k.shape[2]
  qg = q.reshape(b, t, kv_heads, h // kv_heads, d)
  scores = jnp.einsum("btkgd,bskd->bkgts", qg, k, preferred_element_type=jnp.float32)
  scores *= d**-0.5
  scores = jnp.where(mask[:, None, None], scores, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(scores, axis=-1)
  out = jnp.einsum("bkgts,bskd->btkgd", probs.astype(v.dtype), v).reshape(b, t, h, d)
  # A query row with no visible key (possible only with caller-made masks) gets zeros, not NaN or
  # the mean of v; zeroing its output row equals zeroing its probabilities and touches t*d, not t*s.
  return jnp.where(mask.any(-1)[:, :, None, None], out, 0)


_REFERENCE: dict[str, AttentionImpl] = {"xla": xla_attention, "xla_blocked": xla_blocked_attention}

