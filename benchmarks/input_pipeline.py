"""Input pipeline throughput (packed tokens/s) beside the tokens/s a CPU train step consumes.

    python benchmarks/input_pipeline.py [--data_dir SHARDS | --mixed_shards GLOB]
        [--text_model SP.model] [--workers 2] [--seq_len 2800 --global_batch 4]

With --data_dir, reads one folder of shards per source (`{data_dir}/{source}/*.array_record`);
with --mixed_shards, one tokenization job's mixed-kind shards (e.g. the mini corpus job's
`OUT/shards/*.array_record`), each source keeping its kind; without either, writes synthetic shards of realistic shapes first (16x16 image grids, 2-10 s of speech at
50 frames/s with 8 RVQ layers, 4-8 video frames) and trains a small text model. The reference is a
jitted train step (forward, cross-entropy, AdamW update) of a small decoder on the same batch
shape, on this machine's CPU. Goal: pipeline >= 20x the step. Rounds interleave --batches/--rounds
pipeline batches with --steps train steps (benchmarks/protocol.py); printed: best and median
tokens/s of each and the ratios of both. Grain workers keep prefetching during the step's turn,
which flatters each pipeline round by at most its few buffered batches.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The synthetic shard samples are test code (tests/synthetic_shards.py), not part of the package.
sys.path.append(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

from configs.data import stage_weights  # noqa: E402
from mio_jax.data import packing, pipeline  # noqa: E402
from mio_jax.train.code_order import training_vocab  # noqa: E402
import synthetic_shards as synthetic  # noqa: E402
from benchmarks import protocol  # noqa: E402

KINDS = {"image_text": "image_text", "text": "text", "interleaved": "interleaved",
         "video_text": "video_text", "speech_text": "speech_text", "conversation": "conversation"}


def make_synthetic_shards(root: str, samples_per_source: int) -> None:
  for i, kind in enumerate(KINDS):
    synthetic.write_shards(os.path.join(root, kind), kind, num_samples=samples_per_source,
                           num_shards=4, seed=i, grid=16, speech_frames=(100, 500))


class PipelineReader:
  """One pipeline iterator, read in chunks: packed-token counts and counters of what was read."""

  def __init__(self, cfg, warmup: int):
    self.names = [f"samples/{n}" for n in pipeline.source_names(cfg.data)] + list(packing.STAT_NAMES)
    self.it = iter(pipeline.build_dataset(cfg.data, training_vocab(cfg)))
    for _ in range(warmup):
      next(self.it)
    self.real, self.slots, self.counts = [], [], 0

  def read(self, batches: int) -> None:
    real = slots = 0
    for _ in range(batches):
      b = next(self.it)
      real += int((b["segment_ids"] > 0).sum())
      slots += b["segment_ids"].size
      self.counts = self.counts + b["stats"].sum(axis=0)
    self.real.append(real)
    self.slots.append(slots)

  def close(self) -> dict:
    if hasattr(self.it, "close"):
      self.it.close()
    return dict(zip(self.names, map(int, self.counts)))


def train_steps(vocab_size: int, batch: int, seq_len: int, steps: int):
  """A compiled train step of a small decoder (embed 256, 4 layers) on CPU -> fn running `steps`."""
  from mio_jax.model.transformer import ModelConfig, Transformer
  mc = ModelConfig(vocab_size=vocab_size, embed_dim=256, num_layers=4, num_heads=4, num_kv_heads=2,
                   head_dim=64, mlp_dim=1024, dtype="float32", remat_policy="none")
  model = Transformer(mc, rngs=nnx.Rngs(0))
  opt = nnx.Optimizer(model, optax.adamw(3e-5), wrt=nnx.Param)

  @nnx.jit
  def step(model, opt, ids, seg, pos, tgt, mask):
    def loss_fn(model):
      logits = model(ids, seg, pos).astype(jnp.float32)
      ce = optax.softmax_cross_entropy_with_integer_labels(logits, tgt)
      return (ce * mask).sum() / jnp.maximum(mask.sum(), 1.0)
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    opt.update(model, grads)
    return loss

  rng = np.random.default_rng(0)
  ids = jnp.asarray(rng.integers(0, vocab_size, (batch, seq_len)), jnp.int32)
  seg = jnp.ones((batch, seq_len), jnp.int32)
  pos = jnp.broadcast_to(jnp.arange(seq_len, dtype=jnp.int32), (batch, seq_len))
  mask = jnp.ones((batch, seq_len), jnp.float32)
  step(model, opt, ids, seg, pos, ids, mask).block_until_ready()  # compile

  def run_steps():
    for _ in range(steps):
      loss = step(model, opt, ids, seg, pos, ids, mask)
    loss.block_until_ready()

  return run_steps


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--data_dir")
  p.add_argument("--mixed_shards")
  p.add_argument("--text_model")
  p.add_argument("--stage", type=int, default=2)
  p.add_argument("--seq_len", type=int, default=2800)
  p.add_argument("--global_batch", type=int, default=4)
  p.add_argument("--workers", type=int, default=2)
  p.add_argument("--batches", type=int, default=42, help="timed pipeline batches, over all rounds")
  p.add_argument("--steps", type=int, default=1, help="train steps per round; 0 skips the reference")
  p.add_argument("--rounds", type=int, default=3)
  p.add_argument("--samples_per_source", type=int, default=400)
  args = p.parse_args()
  run = protocol.start("input pipeline vs the CPU train step")

  tmp = tempfile.mkdtemp(prefix="mio_bench_")
  data_dir = args.data_dir or os.path.join(tmp, "shards")
  if not args.data_dir and not args.mixed_shards:
    make_synthetic_shards(data_dir, args.samples_per_source)
  text_model = args.text_model or synthetic.tiny_text_model(os.path.join(tmp, "sp"), 1000)
  weights = stage_weights(args.stage)
  weights = {k: w for k, w in weights.items() if w > 0}
  cfg = synthetic.pipeline_config(data_dir, text_model, weights, stage=args.stage,
                                  seq_len=args.seq_len, global_batch=args.global_batch,
                                  worker_count=args.workers, packing_bins=args.global_batch,
                                  template_stage=args.stage,
                                  loss_mask="assistant" if args.stage == 4 else "all")
  if args.mixed_shards:
    cfg.data.mixed_shards = os.path.abspath(args.mixed_shards)
  vocab = training_vocab(cfg)
  given = "mixed " + args.mixed_shards if args.mixed_shards else args.data_dir or "synthetic"
  print(f"jax {jax.__version__}, {os.cpu_count()} CPUs, devices {jax.devices()[0].platform}; "
        f"stage {args.stage}, batch {args.global_batch} x {args.seq_len}, workers {args.workers}, "
        f"vocab {vocab.size}, shards {given}")
  reader = PipelineReader(cfg, warmup=3)
  per_round = max(1, args.batches // args.rounds)
  sides = {"pipeline": lambda: reader.read(per_round)}
  if args.steps:
    sides["train step"] = train_steps(vocab.size, args.global_batch, args.seq_len, args.steps)
  times = run.interleaved(sides, args.rounds, warmup=False)
  stats = reader.close()
  pipe = [r / t for r, t in zip(reader.real, times["pipeline"])]
  fill = sum(reader.real) / sum(reader.slots)
  print(f"pipeline: {max(pipe):,.0f} best / {statistics.median(pipe):,.0f} median packed tokens/s "
        f"({fill:.1%} of slots filled); counts over the timed batches: {stats}")
  if args.steps:
    tokens = args.global_batch * args.seq_len * args.steps
    step = [tokens / t for t in times["train step"]]
    print(f"train step (embed 256, 4 layers, CPU): {max(step):,.0f} best / "
          f"{statistics.median(step):,.0f} median tokens/s")
    print(f"ratio pipeline/step: {max(pipe) / max(step):.1f}x best, "
          f"{statistics.median(pipe) / statistics.median(step):.1f}x median (goal >= 20x)")
  run.finish()


if __name__ == "__main__":
  main()
