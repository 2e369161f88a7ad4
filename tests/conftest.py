"""Test-wide set-up: 8 forced CPU devices, so mesh and sharding tests run as on a pod slice.

XLA reads the flags once, when jax initialises its backend, so they are set here before any test
module imports jax; subprocesses inherit them (with the collective timeouts a busy 2-core box needs).
"""
import os

from mio_jax.parallel.cpu_devices import xla_flags

os.environ["XLA_FLAGS"] = xla_flags(os.environ.get("XLA_FLAGS", ""), 8)
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# Identical programs (the same train step compiled by several tests) compile once per session.
import tempfile  # noqa: E402

os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "mio_jax_test_jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
