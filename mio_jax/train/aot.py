"""Ahead-of-time compile of the train step for a TPU topology, from any host with libtpu installed.

The config is validated against the topology's devices and the mesh built over them as training
does; the step is the one launch/train.py compiles (mio_jax/train/compile.py). The report gives
per-chip memory, the analytic model FLOPs per step and a roofline lower bound on step time.
"""

from __future__ import annotations

import re
import time

import jax
from jax.sharding import NamedSharding

from mio_jax.model.transformer import ModelConfig
from mio_jax.parallel import mesh as mesh_lib
from mio_jax.parallel.rules import activation_sharding, batch_spec, get_rules
from mio_jax.parallel.tpu_topologies import compile_only_topology, parse_slice
from mio_jax.train.code_order import training_vocab, with_concrete_code_order
from mio_jax.train.compile import attention_kernel_for, lower_step, memory_stats, train_step_fn
from mio_jax.train.metrics import train_flops_per_token
from mio_jax.train.state import abstract_train_state, make_optimizer
from mio_jax.train.validate import validate

GIB = 2**30


class CompileOutOfMemory(RuntimeError):
  """The step does not fit the chip's HBM; the message is one line with the numbers."""


def compile_for_topology(config, topology: str, num_slices: int = 1) -> dict:
  """Compile config's train step for `num_slices` slices named `topology` (e.g. "v5p-128").

  Raises TopologyNameError / ConfigError (bad input, before compiling) or CompileOutOfMemory.
  """
  tpu_slice = parse_slice(topology)
  devices = compile_only_topology(tpu_slice, num_slices)
  axes = validate(config, devices)
  config = with_concrete_code_order(config)
  mesh = mesh_lib.make_mesh(config.mesh, devices)
  rules = get_rules(config.sharding.rules)
  model_cfg = ModelConfig.from_config(config.model, training_vocab(config))
  tx, schedule = make_optimizer(config.optimizer, config.train.steps)
  batch_sharding = NamedSharding(mesh, batch_spec())
  chip = tpu_slice.chip
  hbm = int(chip.hbm_gib * GIB)

  # The persistent compilation cache cannot hold TPU executables without a TPU client.
  cache_was_on = jax.config.jax_enable_compilation_cache
  jax.config.update("jax_enable_compilation_cache", False)
  # Outside the mesh context: optax computes eagerly, and compile-only devices cannot run anything.
  # The model traces with the TPU's kernel and tiles though this host is a CPU.
  kernel = attention_kernel_for(config, "tpu")
  _, state, shardings, graphdef = abstract_train_state(model_cfg, tx, config.train.seed, mesh, rules,
                                                       kernel)
  try:
    with jax.set_mesh(mesh), activation_sharding(mesh, rules):
      step_fn = train_step_fn(config, graphdef, tx, schedule)
      start = time.perf_counter()
      lowered = lower_step(step_fn, state, shardings, batch_sharding, config)
      try:
        compiled = lowered.compile()
      except Exception as e:  # XLA's runtime error type moved between jax versions
        if "RESOURCE_EXHAUSTED" in str(e) or "Ran out of memory" in str(e):
          raise CompileOutOfMemory(_oom_line(str(e), topology, hbm)) from None
        raise
      seconds = time.perf_counter() - start
  finally:
    jax.config.update("jax_enable_compilation_cache", cache_was_on)

  chips = len(mesh.devices.flat)
  tokens = config.data.global_batch * config.data.seq_len
  flops = train_flops_per_token(model_cfg, config.data.seq_len) * tokens
  mem = memory_stats(compiled)
  compute_s = flops / (chips * chip.peak_bf16_tflops * 1e12)
  # Every byte of the state is read once and written once per step, at the least.
  state_io_bytes = mem["argument_bytes"] + mem["output_bytes"]
  memory_s = state_io_bytes / (chip.hbm_gb_per_s * 1e9)
  report = {
      "topology": topology, "jax_topology": tpu_slice.jax_name, "num_slices": num_slices,
      "chips": chips, "mesh": {k: int(v) for k, v in axes.items()},
      "global_batch": config.data.global_batch, "seq_len": config.data.seq_len,
      "attention_impl": kernel.impl, "remat_policy": model_cfg.remat_policy,
      "loss_chunk": model_cfg.loss_chunk, "vocab_size": model_cfg.vocab_size,
      "params": model_cfg.num_params(), "compile_seconds": round(seconds, 1),
      **{f"{k}_per_chip": v for k, v in mem.items()},
      "hbm_bytes_per_chip": hbm, "headroom_bytes_per_chip": hbm - mem["peak_bytes"],
      "model_flops_per_step": flops,
      # XLA's cost analysis counts a scanned (or accumulated) loop body once: a lower count.
      "xla_flops_per_chip_per_step_loops_once": _xla_flops(compiled),
      "peak_bf16_tflops_per_chip": chip.peak_bf16_tflops, "hbm_gb_per_s_per_chip": chip.hbm_gb_per_s,
      "compute_bound_s": compute_s, "memory_bound_s": memory_s,
      "step_time_lower_bound_s": max(compute_s, memory_s),
  }
  if report["headroom_bytes_per_chip"] < 0:
    raise CompileOutOfMemory(f"{topology}: out of memory: the train step needs "
                             f"{mem['peak_bytes'] / GIB:.2f} GiB of {chip.hbm_gib:g} GiB HBM per chip")
  return report


def _xla_flops(compiled) -> float | None:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  return float(cost["flops"]) if cost and "flops" in cost else None


def _oom_line(message: str, topology: str, hbm: int) -> str:
  """One line from XLA's out-of-memory report (its wording differs by where memory ran out)."""
  size = r"([\d.]+[KMGT]?)"
  used = re.search(rf"Used {size} of {size} hbm", message)
  over = re.search(rf"Exceeded hbm capacity by {size}", message)
  required = re.search(rf"memory required for (.+?) \({size}\) exceeds available HBM \({size}\)", message)
  if used:
    text = f"{used.group(1)} of {used.group(2)} HBM per chip" + (f" ({over.group(1)} over)" if over else "")
  elif required:
    text = f"{required.group(2)} for {required.group(1)} of {required.group(3)} HBM per chip"
  else:
    first = next((l.strip() for l in message.splitlines() if l.strip()), "")
    text = f"more than {hbm / GIB:g} GiB HBM per chip: {first[:300]}"
  return f"{topology}: out of memory: the train step needs {text}"


def format_report(r: dict) -> str:
  g = lambda key: r[key] / GIB
  mesh = " x ".join(f"{k} {v}" for k, v in r["mesh"].items())
  return "\n".join([
      f"{r['topology']} ({r['jax_topology']}, {r['num_slices']} slice(s)): {r['chips']} chips, mesh {mesh}",
      f"  batch {r['global_batch']} x {r['seq_len']}, attention {r['attention_impl']}, remat "
      f"{r['remat_policy']}, loss {'chunks of ' + str(r['loss_chunk']) if r['loss_chunk'] else 'plain'}, "
      f"vocab {r['vocab_size']}, {r['params'] / 1e9:.2f}B parameters; compiled in {r['compile_seconds']:.0f} s",
      f"  per chip: peak {g('peak_bytes_per_chip'):.2f} GiB of {g('hbm_bytes_per_chip'):g} GiB HBM "
      f"(headroom {g('headroom_bytes_per_chip'):.2f} GiB)",
      f"    arguments {g('argument_bytes_per_chip'):.2f} GiB, temporaries {g('temp_bytes_per_chip'):.2f} GiB, "
      f"outputs {g('output_bytes_per_chip'):.2f} GiB (aliased to arguments {g('alias_bytes_per_chip'):.2f} GiB); "
      f"XLA's liveness peak {g('xla_peak_bytes_per_chip'):.2f} GiB",
      f"  model FLOPs per step (analytic, 6N + attention): {r['model_flops_per_step'] / 1e12:,.1f} TFLOP"
      + (f"; XLA's cost analysis counts loop bodies once: {r['xla_flops_per_chip_per_step_loops_once'] / 1e12:.1f} "
         "TFLOP per chip" if r["xla_flops_per_chip_per_step_loops_once"] else ""),
      f"  roofline lower bound: {r['step_time_lower_bound_s']:.2f} s per step (compute "
      f"{r['compute_bound_s']:.2f} s at {r['peak_bf16_tflops_per_chip']:g} TFLOP/s per chip; state "
      f"read+write {r['memory_bound_s'] * 1e3:.1f} ms at {r['hbm_gb_per_s_per_chip']:g} GB/s)",
  ])
