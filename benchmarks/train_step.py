"""Train-step throughput (tokens/s) and MFU, against HF transformers + torch AdamW in the same run.

  python benchmarks/train_step.py                       # ~40M preset, batch 4 x 512, vs PyTorch (CPU)
  python benchmarks/train_step.py --preset=1b --batch=8 --seq=2048 --notorch   # MFU on one GPU
  python benchmarks/train_step.py --threads=1 --reference=plain   # the CPU graph rewrites vs without

Both sides train the same architecture (Llama, GQA, SwiGLU, untied head) on the same shapes in
float32 (bfloat16 compute with --dtype=bfloat16 on accelerators). Rounds interleave the two
(benchmarks/protocol.py) so that machine noise hits both alike: best and median per side and the
ratios of both. Each side's process CPU seconds per step are printed too: on a loaded machine they
move less than wall time. `--threads=1` runs
both sides on one core (CPU affinity, which both size their thread pools by), which load disturbs
least.
"""

from __future__ import annotations

import os
import statistics
import sys

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from absl import app, flags  # noqa: E402

from benchmarks import protocol  # noqa: E402

flags.DEFINE_string("preset", "40m", "Model preset from configs/models.py.")
flags.DEFINE_integer("batch", 4, "Global batch (sequences).")
flags.DEFINE_integer("seq", 512, "Sequence length.")
flags.DEFINE_integer("steps", 5, "Timed steps per round.")
flags.DEFINE_integer("rounds", 3, "Alternating rounds.")
flags.DEFINE_string("dtype", "float32", "Compute dtype of our model.")
flags.DEFINE_string("remat", "none", "Remat policy.")
flags.DEFINE_string("attention", None, "Attention implementation (default: the preset's choice).")
flags.DEFINE_bool("scan_layers", None, "Scan over the layers (default: the preset's choice).")
flags.DEFINE_integer("threads", 0, "Run both sides on this many cores (0: all the process may use).")
flags.DEFINE_bool("torch", True, "Also time a reference (--reference).")
flags.DEFINE_enum("reference", "torch", ["torch", "plain"],
                  "torch: HF transformers LlamaForCausalLM with torch AdamW; plain: this preset with "
                  "model.cpu_tuned_matmuls off (what the XLA-CPU graph rewrites buy).")
FLAGS = flags.FLAGS


def jax_runner(cpu_tuned_matmuls=None):
  import jax
  import ml_collections
  from jax.sharding import NamedSharding

  from configs.models import get_model
  from mio_jax.model.transformer import ModelConfig
  from mio_jax.parallel.mesh import make_mesh
  from mio_jax.parallel.rules import activation_sharding, batch_spec, get_rules
  from mio_jax.train import metrics
  from mio_jax.train.state import create_train_state, make_optimizer
  from mio_jax.train.step import make_train_step
  from mio_jax.train.synthetic_batches import SyntheticBatches

  mc = get_model(FLAGS.preset)
  mc.update(dtype=FLAGS.dtype, remat_policy=FLAGS.remat)
  if FLAGS.attention is not None:
    mc.attention_impl = FLAGS.attention
  if FLAGS.scan_layers is not None:
    mc.scan_layers = FLAGS.scan_layers
  if cpu_tuned_matmuls is not None:
    mc.cpu_tuned_matmuls = cpu_tuned_matmuls
  cfg = ModelConfig.from_config(mc)
  opt = ml_collections.ConfigDict(dict(peak_lr=3e-4, warmup_fraction=0.03, final_lr_fraction=0.1, b1=0.9,
                                       b2=0.95, eps=1e-8, weight_decay=0.1, clip_norm=1.0,
                                       schedule="warmup_cosine", decay_fraction=0.0))
  mesh = make_mesh(ml_collections.ConfigDict(dict(ici=dict(fsdp=-1), dcn=dict(data=-1),
                                                  processes_per_node=0)))
  rules = get_rules("fsdp")
  tx, schedule = make_optimizer(opt, 1000)
  ranges = {"all": (0, cfg.vocab_size)}
  sharding = NamedSharding(mesh, batch_spec())
  with jax.set_mesh(mesh), activation_sharding(mesh, rules):
    state, shardings, graphdef = create_train_state(cfg, tx, 0, mesh, rules)
    step = jax.jit(make_train_step(graphdef, tx, schedule, modality_ranges=ranges),
                   in_shardings=(shardings, sharding), out_shardings=(shardings, None), donate_argnums=0)
    batches = SyntheticBatches(seed=0, global_batch=FLAGS.batch, seq_len=FLAGS.seq,
                               vocab_size=cfg.vocab_size, batch_sharding=sharding)
    batch = next(batches)
    state, m = step(state, batch)  # compile
    jax.block_until_ready(m)
  holder = {"state": state}

  def steps(n: int) -> None:
    s = holder["state"]
    with jax.set_mesh(mesh), activation_sharding(mesh, rules):
      for _ in range(n):
        s, m = step(s, batch)
      jax.block_until_ready(m["loss"])
    holder["state"] = s

  peak = metrics.num_devices_peak(0.0)
  flops_per_token = metrics.train_flops_per_token(cfg, FLAGS.seq)
  return steps, cfg, peak, flops_per_token


def torch_runner(cfg):
  import torch
  from transformers import LlamaConfig, LlamaForCausalLM

  torch.manual_seed(0)
  if FLAGS.threads:
    torch.set_num_threads(FLAGS.threads)
  hf = LlamaConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.embed_dim, intermediate_size=cfg.mlp_dim,
                   num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
                   num_key_value_heads=cfg.num_kv_heads, head_dim=cfg.head_dim, rms_norm_eps=cfg.norm_eps,
                   rope_theta=cfg.rope_theta, tie_word_embeddings=False, max_position_embeddings=FLAGS.seq)
  model = LlamaForCausalLM(hf).train()
  opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)
  ids = torch.randint(0, cfg.vocab_size, (FLAGS.batch, FLAGS.seq))

  def one_step():
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)

  one_step()  # warm-up

  def steps(n: int) -> None:
    for _ in range(n):
      one_step()

  return steps


def main(argv):
  del argv
  if FLAGS.threads:  # before jax and torch size their thread pools, which follow the affinity
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:FLAGS.threads])
  import jax
  run = protocol.start("train step: mio_jax vs " + FLAGS.reference)
  run_jax, cfg, peak, flops_per_token = jax_runner()
  run_torch = None
  if FLAGS.torch:
    run_torch = torch_runner(cfg) if FLAGS.reference == "torch" else jax_runner(False)[0]
  name = "torch" if FLAGS.reference == "torch" else "plain"
  sides = {"mio_jax": lambda: run_jax(FLAGS.steps)}
  if run_torch:
    sides[name] = lambda: run_torch(FLAGS.steps)
  times = run.interleaved(sides, FLAGS.rounds, warmup=False)  # both compiled / warmed up already
  tokens = FLAGS.batch * FLAGS.seq * FLAGS.steps
  run.compare(times, baseline=name if run_torch else None, work={k: float(tokens) for k in sides}, unit="tokens")
  jax_tps = [tokens / t for t in times["mio_jax"]]
  jax_cpu = [c / FLAGS.steps for c in run.cpu_seconds["mio_jax"]]
  torch_tps = [tokens / t for t in times.get(name, [])]
  torch_cpu = [c / FLAGS.steps for c in run.cpu_seconds.get(name, [])]
  ours = statistics.median(jax_tps)
  print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}  jax {jax.__version__}  "
        f"preset {FLAGS.preset} ({cfg.num_params() / 1e6:.1f}M params)  batch {FLAGS.batch} x {FLAGS.seq}  "
        f"dtype {FLAGS.dtype}  scan_layers {cfg.scan_layers}  remat {cfg.remat_policy}  "
        f"attention {cfg.attention_impl}  cpu_tuned_matmuls {cfg.cpu_tuned_matmuls}")
  print(f"mio_jax: {ours:,.0f} tokens/s" + (f", MFU {ours * flops_per_token / (peak * 1e12):.1%}" if peak else
                                             ", MFU n/a (no peak FLOP/s known for this device)"))
  if torch_tps and name == "plain":
    theirs = statistics.median(torch_tps)
    print(f"plain (cpu_tuned_matmuls False): {theirs:,.0f} tokens/s")
    print(f"ratio mio_jax / plain: {ours / theirs:.2f}x  (CPU seconds per step, plain / mio_jax: "
          f"{statistics.median(torch_cpu) / statistics.median(jax_cpu):.2f}x)")
  elif torch_tps:
    import torch
    theirs = statistics.median(torch_tps)
    print(f"torch {torch.__version__} (threads {torch.get_num_threads()}): {theirs:,.0f} tokens/s")
    print(f"ratio mio_jax / torch: {ours / theirs:.2f}x  (CPU seconds per step, torch / mio_jax: "
          f"{statistics.median(torch_cpu) / statistics.median(jax_cpu):.2f}x)")
  run.finish()


if __name__ == "__main__":
  app.run(main)
