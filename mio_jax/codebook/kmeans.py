"""The k-means state on the mesh and its jitted steps: assignment, Lloyd / mini-batch updates,
re-seeding, utilisation metrics, initialisation.

Sharding. Centroids [K, d] and every per-cluster array are split on K over *all* devices (the
flattened data x fsdp x tensor mesh); points arrive split on rows over (data, fsdp), as training's
batches. The specs come from the project's logical-axis machinery (`logical_to_spec`) with a rule
table of the codebook's own, CODEBOOK_RULES: the training tables (mio_jax/parallel/rules.py) are
chosen per run (`sharding.rules=data` replicates every weight) and a 500K x 1152 table must never
be replicated, so the codebook does not follow them.

A step, inside one shard_map: all-gather the batch to every device (B x d: 0.3 GB at B = 64K,
d = 1152, against 2.3 GB to move the centroids), search the device's own centroid shard block by
block (search.py), take the global (min score, lowest id) with two pmins over B numbers, then each
device adds the points assigned to *its* centroids to its sums and counts: no collective touches
the [K, d] table. The per-device work is the ideal 2 B (K / devices) d multiply-adds.

State (a dict; per-cluster arrays sharded, the rest replicated):
  centroids [Kp, d], pass_counts [Kp], usage [Kp], step, pass_sq, pass_points, reseeded (a total)
  lloyd:     sums [Kp, d], pool_x [M, d], pool_d [M]   (the pass's M farthest points)
  minibatch: counts [Kp], last_seen [Kp]
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from mio_jax.codebook.search import Layout, nearest_across_shards, nearest_in_shard, squared_distance
from mio_jax.parallel.rules import MESH_AXES, logical_to_spec

CODEBOOK_RULES = (("codebook", MESH_AXES), ("batch", ("data", "fsdp")), ("embed", None))
CENTROID_AXES = MESH_AXES
POINT_AXES = ("data", "fsdp")
CLUSTER_SPEC = logical_to_spec(("codebook",), CODEBOOK_RULES)
TABLE_SPEC = logical_to_spec(("codebook", "embed"), CODEBOOK_RULES)
POINTS_SPEC = logical_to_spec(("batch", "embed"), CODEBOOK_RULES)
WEIGHTS_SPEC = logical_to_spec(("batch",), CODEBOOK_RULES)


@dataclasses.dataclass(frozen=True)
class Options:
  """What the steps do (config keys in configs/codebook.py, docs/codebook.md)."""
  update: str  # "lloyd" | "minibatch"
  reseed: str  # "farthest" | "none": re-seed clusters that got no point in a whole pass
  reseed_pool: int  # M: candidate points (the farthest from their centroid) kept for re-seeding
  utilisation: str  # "none" | "usage_ema": also re-seed clusters used under min_usage / K
  usage_decay: float  # mini-batch: usage EMA decay per step (Lloyd uses each pass's share)
  min_usage: float  # as a fraction of the uniform share 1 / K
  steps_per_pass: int
  precision: str = "highest"


def state_specs(options: Options) -> dict:
  specs = dict(centroids=TABLE_SPEC, pass_counts=CLUSTER_SPEC, usage=CLUSTER_SPEC, step=P(),
               pass_sq=P(), pass_points=P(), reseeded=P())
  if options.update == "lloyd":
    specs.update(sums=TABLE_SPEC, pool_x=P(), pool_d=P())
  else:
    specs.update(counts=CLUSTER_SPEC, last_seen=CLUSTER_SPEC)
  return specs


def abstract_state(mesh: Mesh, layout: Layout, dim: int, options: Options) -> dict:
  """ShapeDtypeStructs with shardings: the restore target of a checkpoint."""
  kp, m = layout.padded, options.reseed_pool
  shapes = dict(centroids=((kp, dim), jnp.float32), pass_counts=((kp,), jnp.float32),
                usage=((kp,), jnp.float32), step=((), jnp.int32), pass_sq=((), jnp.float32),
                pass_points=((), jnp.float32), reseeded=((), jnp.int32), sums=((kp, dim), jnp.float32),
                pool_x=((m, dim), jnp.float32), pool_d=((m,), jnp.float32),
                counts=((kp,), jnp.float32), last_seen=((kp,), jnp.int32))
  return {k: jax.ShapeDtypeStruct(*shapes[k], sharding=NamedSharding(mesh, spec))
          for k, spec in state_specs(options).items()}


def new_state(mesh: Mesh, layout: Layout, centroids: jax.Array, options: Options) -> dict:
  """The state at step 0 around initial centroids [K, d] (any sharding)."""
  abstract = abstract_state(mesh, layout, centroids.shape[1], options)
  k = layout.num_clusters

  def build(c):
    state = {}
    for name, a in abstract.items():
      state[name] = jnp.zeros(a.shape, a.dtype)
    state["centroids"] = jnp.pad(c.astype(jnp.float32), ((0, layout.padded - k), (0, 0)))
    state["usage"] = jnp.where(jnp.arange(layout.padded) < k, 1.0 / k, 0.0).astype(jnp.float32)
    if "pool_d" in state:
      state["pool_d"] = jnp.full(state["pool_d"].shape, -jnp.inf, jnp.float32)
    return state

  return jax.jit(build, out_shardings={n: a.sharding for n, a in abstract.items()})(centroids)


def place_centroids(mesh: Mesh, layout: Layout, centroids) -> jax.Array:
  """Centroids [K, d] (host or device) padded to the layout and split on K over every device."""
  pad = lambda c: jnp.pad(jnp.asarray(c, jnp.float32), ((0, layout.padded - layout.num_clusters), (0, 0)))
  return jax.jit(pad, out_shardings=NamedSharding(mesh, TABLE_SPEC))(centroids)


def _shard_start(layout: Layout):
  return lax.axis_index(CENTROID_AXES).astype(jnp.int32) * layout.shard_size


def _farthest(pool_x, pool_d, x, d2, w, m: int):
  """The m points farthest from their centroid among the pool and this batch (padding rows and
  points sitting on a centroid never qualify), farthest first; ties to the lower index."""
  cand_d = jnp.concatenate([pool_d, jnp.where(w > 0, d2, -jnp.inf)])
  cand_x = jnp.concatenate([pool_x, x])
  top_d, idx = lax.top_k(cand_d, m)
  return cand_x[idx], top_d


def _reseed(centroids, dead, pool_x, pool_d, layout: Layout):
  """Dead clusters, in id order across all devices, take the pool's points farthest first; those
  beyond the pool's valid points wait for the next pass or step. Returns (centroids, taken)."""
  shards = layout.num_shards
  me = lax.axis_index(CENTROID_AXES)
  per_shard = lax.psum(jnp.zeros((shards,), jnp.int32).at[me].set(jnp.sum(dead, dtype=jnp.int32)),
                       CENTROID_AXES)
  offset = jnp.sum(jnp.where(jnp.arange(shards) < me, per_shard, 0))
  rank = offset + jnp.cumsum(dead, dtype=jnp.int32) - 1
  taken = dead & (rank < jnp.sum(pool_d > 0))
  new = pool_x[jnp.clip(rank, 0, pool_x.shape[0] - 1)]
  return jnp.where(taken[:, None], new, centroids), taken


def _valid(layout: Layout):
  return _shard_start(layout) + jnp.arange(layout.shard_size) < layout.num_clusters


@functools.lru_cache(maxsize=8)  # one trace per (mesh, layout, options), fits share it
def make_step(mesh: Mesh, layout: Layout, options: Options):
  """jitted (state, points [B, d], weights [B]) -> (state, {batch_sq, batch_points})."""
  specs = state_specs(options)
  m, k = options.reseed_pool, layout.num_clusters

  def body(state, x, w):
    x = lax.all_gather(x, POINT_AXES, tiled=True)
    w = lax.all_gather(w, POINT_AXES, tiled=True)
    start = _shard_start(layout)
    best, best_id = nearest_in_shard(x, state["centroids"], start, layout, options.precision)
    score, ids = nearest_across_shards(best, best_id, CENTROID_AXES)
    d2 = jnp.where(w > 0, squared_distance(x, score), 0.0)
    local = ids - start
    wm = jnp.where((local >= 0) & (local < layout.shard_size), w, 0.0)
    seg = jnp.where(wm > 0, local, layout.shard_size)  # out of range: dropped by segment_sum
    counts = jax.ops.segment_sum(wm, seg, layout.shard_size)
    sums = jax.ops.segment_sum(x * wm[:, None], seg, layout.shard_size)
    points, sq = jnp.sum(w), jnp.sum(w * d2)
    step = state["step"] + 1
    new = dict(state, step=step, pass_counts=state["pass_counts"] + counts,
               pass_sq=state["pass_sq"] + sq, pass_points=state["pass_points"] + points)
    if options.update == "lloyd":  # centroids move at the end of the pass (make_end_pass)
      new["sums"] = state["sums"] + sums
      new["pool_x"], new["pool_d"] = _farthest(state["pool_x"], state["pool_d"], x, d2, w, m)
    else:  # Sculley: each centroid is the running mean of every point it was given (rate n / count)
      total = state["counts"] + counts
      c = state["centroids"]
      new["centroids"] = jnp.where((counts > 0)[:, None], (c * state["counts"][:, None] + sums)
                                   / jnp.maximum(total, 1.0)[:, None], c)
      new["last_seen"] = jnp.where(counts > 0, step, state["last_seen"])
      d = options.usage_decay
      new["usage"] = d * state["usage"] + (1 - d) * counts / jnp.maximum(points, 1.0)
      dead = _valid(layout) & (step >= options.steps_per_pass)  # one whole pass before judging
      rule = jnp.zeros_like(dead)
      if options.reseed == "farthest":
        rule |= step - new["last_seen"] >= options.steps_per_pass
      if options.utilisation == "usage_ema":
        rule |= new["usage"] < options.min_usage / k
      pool_x, pool_d = _farthest(jnp.zeros((0, x.shape[1])), jnp.zeros((0,)), x, d2, w, min(m, x.shape[0]))
      new["centroids"], taken = _reseed(new["centroids"], dead & rule, pool_x, pool_d, layout)
      new["counts"] = jnp.where(taken, 1.0, total)  # the seed point counts as one observation
      new["usage"] = jnp.where(taken, 1.0 / k, new["usage"])
      new["last_seen"] = jnp.where(taken, step, new["last_seen"])
      new["reseeded"] = state["reseeded"] + lax.psum(jnp.sum(taken, dtype=jnp.int32), CENTROID_AXES)
    return new, dict(batch_sq=sq, batch_points=points)

  metric_specs = dict(batch_sq=P(), batch_points=P())
  fn = jax.shard_map(body, mesh=mesh, in_specs=(specs, POINTS_SPEC, WEIGHTS_SPEC),
                     out_specs=(specs, metric_specs), check_vma=False)
  return jax.jit(fn, donate_argnums=0)


@functools.lru_cache(maxsize=8)  # one trace per (mesh, layout, options), fits share it
def make_end_pass(mesh: Mesh, layout: Layout, options: Options):
  """jitted state -> (state, pass metrics): the pass's usage perplexity, share of clusters used,
  mean squared distance; Lloyd moves every centroid to its points' mean and re-seeds; the pass
  accumulators restart."""
  specs = state_specs(options)
  k = layout.num_clusters

  def body(state):
    counts = state["pass_counts"]
    valid = _valid(layout)
    total = lax.psum(jnp.sum(counts), CENTROID_AXES)
    p = counts / jnp.maximum(total, 1.0)
    entropy = -lax.psum(jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0)),
                        CENTROID_AXES)
    used = lax.psum(jnp.sum((counts > 0) & valid, dtype=jnp.int32), CENTROID_AXES)
    metrics = dict(usage_perplexity=jnp.exp(entropy), used_share=used / k,
                   pass_inertia=state["pass_sq"] / jnp.maximum(state["pass_points"], 1.0))
    new = dict(state, pass_counts=jnp.zeros_like(counts), pass_sq=jnp.zeros_like(state["pass_sq"]),
               pass_points=jnp.zeros_like(state["pass_points"]))
    if options.update == "lloyd":
      c = state["centroids"]
      c = jnp.where((counts > 0)[:, None], state["sums"] / jnp.maximum(counts, 1.0)[:, None], c)
      share = counts / jnp.maximum(total, 1.0)
      rule = jnp.zeros_like(valid)
      if options.reseed == "farthest":
        rule |= counts == 0
      if options.utilisation == "usage_ema":
        rule |= share < options.min_usage / k
      new["centroids"], taken = _reseed(c, valid & rule, state["pool_x"], state["pool_d"], layout)
      new["usage"] = jnp.where(taken, 1.0 / k, share)
      new["sums"] = jnp.zeros_like(state["sums"])
      new["pool_x"] = jnp.zeros_like(state["pool_x"])
      new["pool_d"] = jnp.full_like(state["pool_d"], -jnp.inf)
      new["reseeded"] = state["reseeded"] + lax.psum(jnp.sum(taken, dtype=jnp.int32), CENTROID_AXES)
    return new, metrics

  metric_specs = dict(usage_perplexity=P(), used_share=P(), pass_inertia=P())
  fn = jax.shard_map(body, mesh=mesh, in_specs=(specs,), out_specs=(specs, metric_specs),
                     check_vma=False)
  return jax.jit(fn, donate_argnums=0)


@functools.lru_cache(maxsize=8)  # one trace per (mesh, layout, options), fits share it
def make_assign(mesh: Mesh, layout: Layout, precision: str = "highest"):
  """jitted (centroids [Kp, d] sharded, points [B, d], weights [B]) -> (ids [B], squared
  distances [B]), replicated: the tokenizer's lookup and the tests' entry to the search."""

  def body(c, x):
    x = lax.all_gather(x, POINT_AXES, tiled=True)
    best, best_id = nearest_in_shard(x, c, _shard_start(layout), layout, precision)
    score, ids = nearest_across_shards(best, best_id, CENTROID_AXES)
    return ids, squared_distance(x, score)

  fn = jax.shard_map(body, mesh=mesh, in_specs=(TABLE_SPEC, POINTS_SPEC), out_specs=(P(), P()),
                     check_vma=False)
  return jax.jit(fn)


@functools.partial(jax.jit, static_argnums=3)
def init_random(key, x, w, k: int):
  """k distinct sample points, drawn uniformly among the rows with weight > 0."""
  idx = jax.random.choice(key, x.shape[0], (k,), replace=False, p=w / jnp.sum(w))
  return x[idx]


@functools.partial(jax.jit, static_argnums=3)
def init_kmeans_pp(key, x, w, k: int):
  """Greedy k-means++ (Arthur & Vassilvitskii 2007; scikit-learn's default): each next centre is the
  best, by the potential sum(w x min squared distance), of 2 + log(k) candidates drawn with
  probability proportional to weight x squared distance to the nearest centre so far. O(k n d log k)
  sequential work: for small K; at 500K use `random`."""
  x = x.astype(jnp.float32)
  log_w = jnp.log(w)
  trials = 2 + int(math.log(k))
  first = jax.random.categorical(jax.random.fold_in(key, 0), log_w)
  centres = jnp.zeros((k, x.shape[1]), jnp.float32).at[0].set(x[first])
  d2 = jnp.sum((x - x[first]) ** 2, axis=1)

  def draw(i, carry):
    centres, d2 = carry
    weighted = w * d2
    logits = jnp.where(jnp.sum(weighted) > 0, jnp.log(weighted), log_w)  # all on centres: by weight
    cand = jax.random.categorical(jax.random.fold_in(key, i), logits, shape=(trials,))
    cand_d2 = jnp.minimum(d2[None], jnp.sum((x[None] - x[cand][:, None]) ** 2, axis=2))
    best = jnp.argmin(jnp.sum(w[None] * cand_d2, axis=1))
    return centres.at[i].set(x[cand[best]]), cand_d2[best]

  return lax.fori_loop(1, k, draw, (centres, d2))[0]
