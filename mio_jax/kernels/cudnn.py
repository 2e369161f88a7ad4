"""cuDNN fused attention through `jax.nn.dot_product_attention`, only where it honours the mask.

cuDNN's fused kernel takes a causal flag but no segment ids (an explicit mask or bias would fall
off its fast path, and jax then rejects implementation="cudnn"). So this impl checks the segment
ids are all equal per row (a single unpacked sample, the cuDNN benchmark's case) and raises
otherwise: it never silently drops segment ids. The check needs concrete ids; under jit, with
traced ids, it raises too, because it cannot prove the mask is honoured.
"""

from __future__ import annotations

import jax
import numpy as np


class CudnnMaskError(ValueError):
  pass


def _one_shared_segment(q_seg, kv_seg) -> bool:
  """Every query and key of a row carries the same id, so the mask is causality alone."""
  if isinstance(q_seg, jax.core.Tracer) or isinstance(kv_seg, jax.core.Tracer):
    return False
  q_seg, kv_seg = np.asarray(q_seg), np.asarray(kv_seg)
  first = kv_seg[:, :1]
  return bool((kv_seg == first).all() and (q_seg == first).all())


def cudnn_attention(q, k, v, q_segment_ids, kv_segment_ids, *, causal, backend, blocks=None):
  del blocks  # cuDNN picks its own tiles
  if not _one_shared_segment(q_segment_ids, kv_segment_ids):
    raise CudnnMaskError(
        "attention impl='cudnn' cannot apply segment ids (packed samples or padding): cuDNN's "
        "fused path takes only a causal flag. Use impl='pallas' or impl='xla' for packed batches.")
  if backend != "gpu":
    raise CudnnMaskError(f"attention impl='cudnn' needs an NVIDIA GPU; backend is {backend!r}")
  return jax.nn.dot_product_attention(q, k, v, is_causal=causal, implementation="cudnn")


def cudnn_attention_unmasked(q, k, v, *, causal):
  """The benchmark's entry: causal-only cuDNN, no segment ids at all (traceable under jit)."""
  return jax.nn.dot_product_attention(q, k, v, is_causal=causal, implementation="cudnn")
