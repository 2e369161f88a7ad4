"""Compiling the train step: shared by the training loop and the ahead-of-time compile
(launch/train_compile.py), so both compile exactly the same program.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import NamedSharding

from mio_jax.kernels.block_sizes import block_sizes_from_config
from mio_jax.model.attention import AttentionKernel, attention_kernel
from mio_jax.train.code_order import training_vocab
from mio_jax.train.state import TrainState
from mio_jax.train.step import BATCH_KEYS, make_train_step

log = logging.getLogger("mio_jax.train")


def attention_kernel_for(config, backend: str) -> AttentionKernel:
  """The attention the step traces with on `backend`: config.model.attention_impl resolved there
  (logging what "auto" picked), with config.model.attention_blocks over the backend's tiles."""
  return attention_kernel(config.model.attention_impl, backend, block_sizes_from_config(config, backend))


def train_step_fn(config, graphdef: nnx.GraphDef, tx, schedule) -> Callable:
  """The train step a config asks for (the arguments launch/train.py passes)."""
  return make_train_step(graphdef, tx, schedule,
                         modality_ranges=training_vocab(config).modality_ranges(),
                         grad_accum_steps=config.optimizer.grad_accum_steps,
                         z_loss=config.optimizer.z_loss,
                         skip_nonfinite=config.train.on_nonfinite == "skip")


def abstract_batch(config, batch_sharding: NamedSharding) -> dict[str, jax.ShapeDtypeStruct]:
  shape = (config.data.global_batch, config.data.seq_len)
  batch = {k: jax.ShapeDtypeStruct(shape, jnp.int32, sharding=batch_sharding) for k in BATCH_KEYS}
  batch["loss_mask"] = jax.ShapeDtypeStruct(shape, jnp.float32, sharding=batch_sharding)
  return batch


def lower_step(step_fn, state: TrainState, shardings: TrainState, batch_sharding: NamedSharding,
               config):
  """The jitted step lowered for `state` (arrays or ShapeDtypeStructs) and the config's batch."""
  jitted = jax.jit(step_fn, in_shardings=(shardings, batch_sharding), out_shardings=(shardings, None),
                   donate_argnums=(0,))
  return jitted.lower(state, abstract_batch(config, batch_sharding))


def memory_stats(compiled) -> dict[str, int] | None:
  """Per-device bytes of a compiled step: arguments, outputs, temporaries, aliased, and the peak.

  The peak is what the step holds allocated: arguments, the temporaries' buffer and the outputs
  that do not reuse a donated argument (as MaxText reports it, and as XLA TPU's out-of-memory check
  counts). XLA's own liveness peak (`xla_peak_bytes`) is lower: not every temporary lives at once.
  """
  mem = compiled.memory_analysis()
  if mem is None:
    return None
  get = lambda f: int(getattr(mem, f, 0) or 0)
  stats = {"argument_bytes": get("argument_size_in_bytes"), "output_bytes": get("output_size_in_bytes"),
           "temp_bytes": get("temp_size_in_bytes"), "alias_bytes": get("alias_size_in_bytes"),
           "generated_code_bytes": get("generated_code_size_in_bytes")}
  # Donated state: outputs alias the arguments they replace, so they are counted once.
  stats["peak_bytes"] = (stats["argument_bytes"] + stats["output_bytes"] + stats["temp_bytes"]
                         - stats["alias_bytes"])
  stats["xla_peak_bytes"] = get("peak_memory_in_bytes")
  return stats


def compile_step(step_fn, state: TrainState, shardings: TrainState, batch_sharding: NamedSharding,
                 config) -> Any:
  """Lower and compile once, before the first batch; report the memory the step needs."""
  compiled = lower_step(step_fn, state, shardings, batch_sharding, config).compile()
  stats = memory_stats(compiled)
  if stats is not None:
    log.info("train_step compiled: %.1f MiB per device (arguments %.1f, temporaries %.1f)",
             stats["peak_bytes"] / 2**20, stats["argument_bytes"] / 2**20, stats["temp_bytes"] / 2**20)
  return compiled
