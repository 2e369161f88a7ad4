"""Attention kernels: forward and forward+backward TFLOP/s, and the train step's MFU per impl.

  python benchmarks/attention.py                      # GPU/TPU: seq 2048, 4096, 8192; 1b model MFU
  python benchmarks/attention.py --smoke              # CPU: tiny shapes, proves the script runs

Causal, bf16, head_dim 128, packed segments (random sample lengths) for every impl that honours
them; cuDNN runs causal-only without segments (it cannot apply them), so its row is a reference
for speed, not a like-for-like mask. FLOPs use FlashAttention's convention: causal forward =
2 matmuls x 2 x b x h x s^2 x d / 2, backward = 2.5 x forward; masked-out work the XLA reference
still performs is not counted. Ratios are against the XLA reference measured in the same run:
per sequence length the impls' calls interleave (benchmarks/protocol.py); the table shows medians,
and the ratio of bests beside the ratio of medians. The train-step MFU runs go one impl after the
other (each holds a whole model's state), median of --steps steps.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere, uninstalled

from benchmarks import protocol  # noqa: E402
from mio_jax.kernels.block_sizes import default_block_sizes  # noqa: E402
from mio_jax.kernels.cudnn import cudnn_attention_unmasked  # noqa: E402
from mio_jax.model.attention import attention  # noqa: E402


def packed_segment_ids(rng, batch, seq, mean_len):
  """Rows of samples with random lengths (about mean_len), numbered 1, 2, ..., no padding."""
  rows = []
  for _ in range(batch):
    lengths = []
    while sum(lengths) < seq:
      lengths.append(int(rng.integers(mean_len // 4, 2 * mean_len)))
    ids = np.concatenate([np.full(n, i + 1) for i, n in enumerate(lengths)])[:seq]
    rows.append(ids)
  return jnp.asarray(np.stack(rows), jnp.int32)


def compiled(fn, *args):
  """fn(*args) as a no-argument call, compiled and warmed; raises what compiling raises."""
  jax.block_until_ready(fn(*args))  # compile
  jax.block_until_ready(fn(*args))  # warm
  return lambda: fn(*args)


def _impl(q, k, v, seg, impl, blocks=None):
  return attention(q, k, v, seg, causal=True, impl=impl, blocks=blocks)


def attention_impls(backend, head_dim):
  """name -> fn(q, k, v, seg); the mask each honours is in the name."""
  names = ["xla", "pallas"] + (["splash"] if backend == "tpu" else [])
  out = {name: functools.partial(_impl, impl=name) for name in names}
  no_skip = dataclasses.replace(default_block_sizes(backend, head_dim), skip_empty_blocks=False)
  out["pallas (no seg skip)"] = functools.partial(_impl, impl="pallas", blocks=no_skip)
  if backend == "gpu":
    out["cudnn (causal only)"] = lambda q, k, v, seg: cudnn_attention_unmasked(q, k, v, causal=True)
  return out


def bench_attention(args, backend, run):
  rng = np.random.default_rng(0)
  print(f"\n# attention kernels: causal, {args.dtype}, head_dim {args.head_dim}, heads "
        f"{args.heads}/{args.kv_heads} (q/kv), {args.tokens} tokens per call, packed segments; "
        f"{args.iters} interleaved rounds, medians (x xla: ratio of medians / of bests)")
  print(f"{'seq':>6} {'batch':>5} {'impl':<20} {'fwd ms':>9} {'fwd TF/s':>9} {'x xla':>11} "
        f"{'f+b ms':>9} {'f+b TF/s':>9} {'x xla':>11}")
  dtype = jnp.dtype(args.dtype)
  for seq in args.seqs:
    b = max(1, args.tokens // seq)
    keys = jax.random.split(jax.random.key(seq), 4)
    q = jax.random.normal(keys[0], (b, seq, args.heads, args.head_dim), dtype)
    k = jax.random.normal(keys[1], (b, seq, args.kv_heads, args.head_dim), dtype)
    v = jax.random.normal(keys[2], (b, seq, args.kv_heads, args.head_dim), dtype)
    do = jax.random.normal(keys[3], q.shape, dtype)
    seg = packed_segment_ids(rng, b, seq, args.mean_sample_len)
    fwd_flops = 4.0 * b * args.heads * seq * seq * args.head_dim / 2
    sides = {}
    for name, fn in attention_impls(backend, args.head_dim).items():
      fwd = jax.jit(fn)
      fwd_bwd = jax.jit(jax.grad(
          lambda q, k, v, seg, fn=fn: jnp.vdot(fn(q, k, v, seg).astype(jnp.float32),
                                               do.astype(jnp.float32)), argnums=(0, 1, 2)))
      try:
        sides[(name, "f")] = compiled(fwd, q, k, v, seg)
        sides[(name, "fb")] = compiled(fwd_bwd, q, k, v, seg)
      except Exception as e:  # noqa: BLE001 - one impl failing (OOM, unsupported) must not end the run
        sides.pop((name, "f"), None)
        print(f"{seq:>6} {b:>5} {name:<20} failed: {type(e).__name__}: {str(e).splitlines()[0][:120]}")
    times = run.interleaved({f"{n}/{p}": fn for (n, p), fn in sides.items()}, args.iters,
                           warmup=False, quiet=True)
    stats = {key: protocol.Stats.of(times[f"{key[0]}/{key[1]}"]) for key in sides}

    def ratio(name, part):
      if ("xla", part) not in stats:
        return f"{'n/a':>11}"
      best, median = protocol.ratios(stats[(name, part)], stats[("xla", part)])
      return f"{median:5.2f}/{best:5.2f}"

    for name in dict.fromkeys(n for n, _ in sides):
      t_f, t_fb = stats[(name, "f")].median, stats[(name, "fb")].median
      print(f"{seq:>6} {b:>5} {name:<20} {t_f * 1e3:9.3f} {fwd_flops / t_f / 1e12:9.1f} "
            f"{ratio(name, 'f')} {t_fb * 1e3:9.3f} {3.5 * fwd_flops / t_fb / 1e12:9.1f} "
            f"{ratio(name, 'fb')}")


def bench_train_step(args, backend):
  import ml_collections
  from configs.models import get_model
  from mio_jax.model.transformer import ModelConfig
  from mio_jax.parallel import mesh as mesh_lib
  from mio_jax.parallel.rules import activation_sharding, batch_spec, get_rules
  from mio_jax.train import metrics
  from mio_jax.train.state import create_train_state, make_optimizer
  from mio_jax.train.step import make_train_step
  from mio_jax.train.synthetic_batches import SyntheticBatches
  from jax.sharding import NamedSharding

  mesh = mesh_lib.make_mesh(ml_collections.ConfigDict(dict(ici=dict(fsdp=-1), dcn=dict(data=-1),
                                                           processes_per_node=0)))
  rules = get_rules("fsdp")
  opt = ml_collections.ConfigDict(dict(peak_lr=1e-4, warmup_fraction=0.1, final_lr_fraction=0.1,
                                       b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1, clip_norm=1.0,
                                       schedule="warmup_cosine", decay_fraction=0.0))
  tx, schedule = make_optimizer(opt, 1000)
  peak = metrics.num_devices_peak(args.peak_tflops)
  print(f"\n# train step, model {args.model}, batch {args.batch} x seq {args.seq} "
        f"(synthetic packed samples), {jax.device_count()} x {jax.devices()[0].device_kind}")
  impls = ["xla", "pallas"] + (["splash"] if backend == "tpu" else []) + (
      ["cudnn"] if backend == "gpu" else [])
  base = None
  for impl in impls:
    model_cfg = ModelConfig.from_config(dict(get_model(args.model), attention_impl=impl))
    try:
      with jax.set_mesh(mesh), activation_sharding(mesh, rules):
        state, shardings, graphdef = create_train_state(model_cfg, tx, 0, mesh, rules)
        batch_sh = NamedSharding(mesh, batch_spec())
        batches = SyntheticBatches(seed=0, global_batch=args.batch, seq_len=args.seq,
                                   vocab_size=model_cfg.vocab_size, batch_sharding=batch_sh)
        step = jax.jit(make_train_step(graphdef, tx, schedule, modality_ranges={}),
                       in_shardings=(shardings, batch_sh), out_shardings=(shardings, None),
                       donate_argnums=(0,))
        batch = next(batches)
        for _ in range(2):  # compile + warm
          state, m = step(state, batch)
        jax.block_until_ready(m)
        step_times = []
        for _ in range(args.steps):
          start = time.perf_counter()
          state, m = step(state, batch)
          jax.block_until_ready(m)
          step_times.append(time.perf_counter() - start)
        seconds = statistics.median(step_times)
    except Exception as e:  # noqa: BLE001 - e.g. cudnn refusing packed segments
      print(f"{impl:<8} failed: {type(e).__name__}: {str(e).splitlines()[0][:140]}")
      continue
    tokens = args.batch * args.seq / seconds
    flops = tokens * metrics.train_flops_per_token(model_cfg, args.seq)
    mfu = f"{flops / (peak * 1e12):.3f}" if peak else "n/a (unknown peak; pass --peak-tflops)"
    base = base or seconds
    print(f"{impl:<8} step {seconds * 1e3:9.1f} ms  tokens/s {tokens:10.0f}  MFU {mfu}  "
          f"x xla {base / seconds:5.2f}")
    del state


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--seqs", default="2048,4096,8192")
  p.add_argument("--head-dim", type=int, default=128)
  p.add_argument("--heads", type=int, default=16)
  p.add_argument("--kv-heads", type=int, default=4)
  p.add_argument("--tokens", type=int, default=32768, help="batch x seq per attention call")
  p.add_argument("--mean-sample-len", type=int, default=1024)
  p.add_argument("--dtype", default="bfloat16")
  p.add_argument("--iters", type=int, default=10)
  p.add_argument("--model", default="1b", help="configs/models.py preset for the MFU runs")
  p.add_argument("--batch", type=int, default=4)
  p.add_argument("--seq", type=int, default=4096)
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--peak-tflops", type=float, default=0.0, help="per device; 0: from device kind")
  p.add_argument("--skip-train-step", action="store_true")
  p.add_argument("--smoke", action="store_true", help="tiny shapes for a CPU check")
  args = p.parse_args()
  if args.smoke:
    args.seqs, args.tokens, args.heads, args.kv_heads, args.head_dim = "64,128", 256, 4, 2, 64
    args.mean_sample_len, args.iters = 32, 2
    args.model, args.batch, args.seq, args.steps = "tiny", 2, 64, 2
  args.seqs = [int(s) for s in args.seqs.split(",")]
  backend = jax.default_backend()
  run = protocol.start("attention kernels and train-step MFU per implementation")
  print(f"backend {backend}, device {jax.devices()[0].device_kind}")
  if backend == "cpu":
    print("CPU: 'pallas' runs in interpret mode; timings say nothing about kernel speed")
  bench_attention(args, backend, run)
  if not args.skip_train_step:
    bench_train_step(args, backend)
  run.finish()


if __name__ == "__main__":
  main()
