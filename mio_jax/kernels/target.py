"""Which backend the kernels lower for: the default backend, or an AOT compile's target.

Compiling ahead of time for a TPU topology from a CPU host (as MaxText's train_compile does) traces
on a machine whose default backend is "cpu"; `compile_target("tpu")` makes the kernels choose their
TPU lowering (and TPU block sizes) during such a trace.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import jax

_target: list[str] = []


@contextlib.contextmanager
def compile_target(backend: str) -> Iterator[None]:
  if backend not in ("cpu", "gpu", "tpu"):
    raise ValueError(f"compile_target: backend must be cpu, gpu or tpu, got {backend!r}")
  _target.append(backend)
  try:
    yield
  finally:
    _target.pop()


def target_backend() -> str:
  return _target[-1] if _target else jax.default_backend()
