"""Nearest centroid of every point, block by block, never forming the [N, K] distance matrix.

Centroids live in a padded layout (`Layout`): K real ids, padded to `num_shards` equal shards of
`blocks` blocks of `block` rows each; shard i holds ids [i * shard_size, (i + 1) * shard_size) and
only ids >= K are padding (their squared norm is +inf, so they are never nearest).

Per block, score = ||c||^2 - 2 x.c (||x||^2 is the same for every centroid and is added back only
for the distance itself); a running (best score, best id) over the blocks keeps the first block
on a tie, and argmin inside a block the lowest index, so ties go to the lowest id. Across shards
(`nearest_across_shards`, inside a shard_map): the minimum score over all devices (pmin), then the
minimum id among the devices that reach it, the same lowest-id rule.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from jax import lax

PRECISIONS = {"default": lax.Precision.DEFAULT, "high": lax.Precision.HIGH,
              "highest": lax.Precision.HIGHEST}


@dataclasses.dataclass(frozen=True)
class Layout:
  """K centroids padded to num_shards x blocks x block rows."""
  num_clusters: int
  num_shards: int
  blocks: int
  block: int

  @classmethod
  def of(cls, num_clusters: int, num_shards: int, block_size: int) -> "Layout":
    """The fewest equal blocks of at most ~block_size rows (a multiple of 8) that hold K / shards
    ids per shard: padding stays under 8 rows per block, whatever K and the shard count are."""
    per_shard = math.ceil(num_clusters / num_shards)
    blocks = math.ceil(per_shard / block_size)
    block = 8 * math.ceil(math.ceil(per_shard / blocks) / 8)
    return cls(num_clusters, num_shards, blocks, block)

  @property
  def shard_size(self) -> int:
    return self.blocks * self.block

  @property
  def padded(self) -> int:
    return self.num_shards * self.shard_size


def squared_norms(centroids: jax.Array, first_id, num_clusters: int) -> jax.Array:
  """||c||^2 per row of a shard whose first global id is `first_id`; +inf for padding ids."""
  ids = first_id + jnp.arange(centroids.shape[0])
  norms = jnp.sum(centroids * centroids, axis=1)
  return jnp.where(ids < num_clusters, norms, jnp.inf)


def nearest_in_shard(x: jax.Array, centroids: jax.Array, first_id, layout: Layout,
                     precision: str = "highest") -> tuple[jax.Array, jax.Array]:
  """(best score [n], best global id [n]) of points x [n, d] against one shard [shard_size, d]
  whose first global id is `first_id`; score = ||c||^2 - 2 x.c. Points with no real centroid in
  the shard get (+inf, num_clusters)."""
  d = x.shape[1]
  norms = squared_norms(centroids, first_id, layout.num_clusters).reshape(layout.blocks, layout.block)
  blocks = centroids.reshape(layout.blocks, layout.block, d)
  starts = first_id + layout.block * jnp.arange(layout.blocks, dtype=jnp.int32)
  minus_2x = -2.0 * x  # exact (a power of two): one multiply per point, not per centroid
  prec = PRECISIONS[precision]

  def one_block(carry, block):
    best, best_id = carry
    c, c_norms, start = block
    scores = c_norms[None, :] + lax.dot_general(minus_2x, c, (((1,), (1,)), ((), ())), precision=prec)
    j = jnp.argmin(scores, axis=1)  # lowest index among equal scores
    s = jnp.take_along_axis(scores, j[:, None], axis=1)[:, 0]
    better = s < best  # strictly: an earlier block (lower ids) keeps a tie
    return (jnp.where(better, s, best), jnp.where(better, start + j.astype(jnp.int32), best_id)), None

  init = (jnp.full((x.shape[0],), jnp.inf, x.dtype),
          jnp.full((x.shape[0],), layout.num_clusters, jnp.int32))
  (best, best_id), _ = lax.scan(one_block, init, (blocks, norms, starts))
  return best, best_id


def nearest_across_shards(best: jax.Array, best_id: jax.Array, axes) -> tuple[jax.Array, jax.Array]:
  """Inside a shard_map over `axes`: every device's (score, id) -> the global minimum score and
  the lowest id reaching it, the same on every device."""
  global_best = lax.pmin(best, axes)
  candidate = jnp.where(best == global_best, best_id, jnp.iinfo(jnp.int32).max)
  return global_best, lax.pmin(candidate, axes)


def squared_distance(x: jax.Array, score: jax.Array) -> jax.Array:
  """||x - c||^2 from the score ||c||^2 - 2 x.c: add ||x||^2; rounding can take it below 0."""
  return jnp.maximum(score + jnp.sum(x * x, axis=1), 0.0)
