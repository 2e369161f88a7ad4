"""Tokens/s of KV-cache generation (mio_jax.generate.decode.generate, greedy) against recomputing
a full forward over the whole sequence for every new token, in one run, same model.

  python benchmarks/generate_decode.py [--prompt 64] [--new 128] [--layers 4] [--embed 256]

Both sides are jitted and warmed up first, then timed in interleaved rounds (benchmarks/protocol.py:
best and median per side, ratios of both); the two outputs must be the same tokens (greedy), so
the benchmark also checks the cache. float32, random init, GQA 8 query / 2 KV heads.
"""

import argparse
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from benchmarks import protocol  # noqa: E402
from mio_jax.generate.decode import generate  # noqa: E402
from mio_jax.model.transformer import ModelConfig, Transformer  # noqa: E402


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--prompt", type=int, default=64)
  p.add_argument("--new", type=int, default=128)
  p.add_argument("--layers", type=int, default=4)
  p.add_argument("--embed", type=int, default=256)
  p.add_argument("--rounds", type=int, default=3)
  args = p.parse_args()
  run = protocol.start("generation: KV-cache decoding vs recomputing the full forward per token")
  cfg = ModelConfig(vocab_size=6126, embed_dim=args.embed, num_layers=args.layers, num_heads=8,
                    num_kv_heads=2, head_dim=args.embed // 8, mlp_dim=3 * args.embed, dtype="float32",
                    remat_policy="none")
  model = Transformer(cfg, rngs=nnx.Rngs(0))
  plen, new, total = args.prompt, args.new, args.prompt + args.new
  prompt = jnp.asarray(np.random.default_rng(0).integers(0, 1000, (1, plen)), jnp.int32)

  def cached():
    return generate(model, prompt, key=jax.random.key(0), max_new_tokens=new)[0].block_until_ready()

  @jax.jit
  def next_token(m, ids, n):  # no cache: one full forward over the padded sequence per token
    logits = m(ids, jnp.ones_like(ids), jnp.arange(total)[None])
    return jnp.argmax(logits[0, n - 1]).astype(jnp.int32)

  def recompute():
    ids = jnp.zeros((1, total), jnp.int32).at[:, :plen].set(prompt)
    for n in range(plen, total):
      ids = ids.at[0, n].set(next_token(model, ids, n))
    return ids[:, plen:].block_until_ready()

  if cached().tolist() != recompute().tolist():  # also compiles both
    sys.exit("cached and recomputed greedy tokens differ")
  print(f"{jax.default_backend()}: prompt {plen}, {new} new tokens, {args.layers} layers x {args.embed}")
  times = run.interleaved({"recompute": recompute, "kv cache": cached}, args.rounds, warmup=False)
  run.compare(times, baseline="recompute", work={"recompute": new, "kv cache": new}, unit="tokens")
  run.finish()


if __name__ == "__main__":
  main()
