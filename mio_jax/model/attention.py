"""One attention entry point for the whole codebase, with the dense XLA reference.

Shapes (batch-major, heads after sequence, as the projections produce them):
  q: [batch, q_len, num_heads, head_dim]
  k, v: [batch, kv_len, num_kv_heads, head_dim], num_heads % num_kv_heads == 0 (GQA)
  segment_ids: [batch, len] int32 when q_len == kv_len, or a pair (q_segment_ids, kv_segment_ids).
    Tokens attend only within their own segment id. Packing numbers samples 1, 2, ... and pads
    with 0, so padding attends only to padding and never leaks into a sample.
Returns [batch, q_len, num_heads, head_dim] in q's dtype.

Every implementation honours segment ids; one that cannot raises instead of dropping them.
Fused kernels register themselves with `register_impl` from `mio_jax.kernels`.
"""

from __future__ import annotations

import functools
from typing import Callable, Protocol

import jax
import jax.numpy as jnp

SegmentIds = jax.Array | tuple[jax.Array, jax.Array]


class AttentionImpl(Protocol):
  def __call__(self, q: jax.Array, k: jax.Array, v: jax.Array, q_segment_ids: jax.Array,
               kv_segment_ids: jax.Array, *, causal: bool) -> jax.Array:
    ...


_IMPLS: dict[str, AttentionImpl] = {}
# Per backend, the preferred implementation for impl="auto"; first registered one that exists wins.
_AUTO_ORDER = {"tpu": ("splash", "pallas", "xla"), "gpu": ("pallas", "xla"), "cpu": ("xla",)}


def register_impl(name: str, fn: AttentionImpl) -> None:
  _IMPLS[name] = fn


def available_impls() -> tuple[str, ...]:
  _load_kernels()
  return ("auto",) + tuple(sorted(_IMPLS))


def resolve_impl(impl: str, backend: str | None = None) -> str:
  """The concrete implementation name `impl` means on `backend` (default: jax's)."""
  _load_kernels()
  if impl != "auto":
    if impl not in _IMPLS:
      raise ValueError(f"unknown attention implementation {impl!r}; choose one of {available_impls()}")
    return impl
  backend = backend or _target_backend()
  for name in _AUTO_ORDER.get(backend, ("xla",)):
    if name in _IMPLS:
      return name
  return "xla"


def attention(q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: SegmentIds, *,
              causal: bool = True, impl: str = "xla", q_offset: int | jax.Array | None = None) -> jax.Array:
  """`q_offset` (decoding with a KV cache: queries start at that key slot) needs impl="xla"."""
  if isinstance(segment_ids, tuple):
    q_seg, kv_seg = segment_ids
  else:
    if q.shape[1] != k.shape[1]:
      raise ValueError("pass (q_segment_ids, kv_segment_ids) when q and kv lengths differ")
    q_seg = kv_seg = segment_ids
  if q.shape[2] % k.shape[2]:
    raise ValueError(f"num_heads={q.shape[2]} is not a multiple of num_kv_heads={k.shape[2]}")
  fn = _IMPLS[resolve_impl(impl)]
  if q_offset is None:
    return fn(q, k, v, q_seg, kv_seg, causal=causal)
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
                  q_offset: int | jax.Array = 0) -> jax.Array:
  """Dense reference: scores in float32, softmax, weighted sum. GQA without repeating K/V."""
  mask = attention_mask(q_segment_ids, kv_segment_ids, causal=causal, q_offset=q_offset)
  return _masked_attention(q, k, v, mask)


def xla_blocked_attention(q, k, v, q_segment_ids, kv_segment_ids, *, causal: bool) -> jax.Array:
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


register_impl("xla", xla_attention)
register_impl("xla_blocked", xla_blocked_attention)


def _target_backend() -> str:
  """The backend being compiled for: jax's own, or a TPU target when compiling ahead of time."""
  try:
    from mio_jax.kernels.target import target_backend
  except ImportError:
    return jax.default_backend()
  return target_backend()


@functools.cache
def _load_kernels() -> None:
  """Import the fused kernels, which register themselves; absent ones are simply not offered."""
  try:
    import mio_jax.kernels  # noqa: F401
  except ImportError:
    pass
