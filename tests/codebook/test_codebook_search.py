"""The blocked, sharded nearest-centroid search against float64 brute force.

Rule for float32 near-ties: an id that differs from the float64 argmin is accepted only when the
two centroids' float64 squared distances differ by at most 1e-6 x (||x||^2 + ||c||^2) of the
point (about 8 float32 epsilons of the terms the score cancels); every such case is counted.
Exact ties (duplicated centroids, planted in other blocks and other devices' shards) must go to the
lowest id.
"""

import jax
import numpy as np
import pytest

from codebook_helpers import squared_distances64
from mio_jax.codebook import kmeans
from mio_jax.codebook.search import Layout
from mio_jax.parallel.mesh import make_mesh
import ml_collections

NEAR_TIE = 1e-6


def mesh_of(devices: int, data: int = 1, tensor: int = 1):
  cfg = ml_collections.ConfigDict(dict(ici=dict(data=data, fsdp=-1, tensor=tensor),
                                       dcn=dict(data=1, fsdp=1, tensor=1), processes_per_node=0))
  return make_mesh(cfg, jax.devices()[:devices])


def points_and_centroids(n, k, d, seed=0):
  rng = np.random.default_rng(seed)
  c = rng.standard_normal((k, d)).astype(np.float32)
  x = (c[rng.integers(0, k, n)] + 0.7 * rng.standard_normal((n, d))).astype(np.float32)
  return x, c


def check_ids(x, c, ids):
  """(mismatches, near-ties among points): asserts every mismatch is a near-tie."""
  dist = squared_distances64(x, c)
  best = dist.argmin(axis=1)
  ours = np.asarray(ids)
  scale = np.sum(x.astype(np.float64) ** 2, axis=1) + np.sum(c.astype(np.float64) ** 2, axis=1)[best]
  gap = dist[np.arange(len(x)), ours] - dist[np.arange(len(x)), best]
  wrong = ours != best
  assert np.all(gap[wrong] <= NEAR_TIE * scale[wrong]), f"{wrong.sum()} ids wrong beyond a near-tie"
  second = np.partition(dist, 1, axis=1)[:, 1]
  near = int(np.sum(second - dist.min(axis=1) <= NEAR_TIE * scale))
  return int(wrong.sum()), near


@pytest.mark.parametrize("devices,data,tensor,k,block", [
    (1, 1, 1, 1003, 64),   # K not a multiple of the block
    (8, 2, 2, 1003, 64),   # nor of the device count; points over data x fsdp, K over all 8
    (8, 1, 1, 5, 8),       # fewer centroids than devices: most shards all padding
])
def test_ids_equal_float64_brute_force(devices, data, tensor, k, block):
  mesh = mesh_of(devices, data, tensor)
  x, c = points_and_centroids(512, k, 48)
  if k > 100:  # exact ties across blocks and shards: copies of 5 and 17 at higher ids
    c[700], c[1002] = c[5], c[17]
    x[:4] = c[[5, 17, 5, 17]] + 1e-3
  layout = Layout.of(k, mesh.size, block)
  assert layout.padded % (mesh.size * layout.block) == 0 and layout.padded >= k
  ids, d2 = kmeans.make_assign(mesh, layout)(kmeans.place_centroids(mesh, layout, c),
                                             jax.device_put(x, jax.NamedSharding(mesh, kmeans.POINTS_SPEC)))
  wrong, near = check_ids(x, c, ids)
  assert wrong == 0, f"{wrong} ids differ from float64 (all near-ties; {near} near-ties in the data)"
  if k > 100:
    assert list(np.asarray(ids)[:4]) == [5, 17, 5, 17]  # the lowest of the tied ids
  want = squared_distances64(x, c).min(axis=1)
  np.testing.assert_allclose(np.asarray(d2), want, rtol=1e-4, atol=1e-4)


def test_layout_pads_little_whatever_k_and_devices():
  # 500,000 over 128 chips in blocks of about 4096: 3907 per chip -> 1 block of 3912 rows
  assert Layout.of(500_000, 128, 4096) == Layout(500_000, 128, 1, 3912)
  # 1003 over 8 devices, blocks of at most ~64: 126 per device -> 2 blocks of 64
  assert Layout.of(1003, 8, 64) == Layout(1003, 8, 2, 64)
  for k, shards, block in [(1, 8, 8), (999, 3, 100), (65_537, 16, 4096)]:
    lay = Layout.of(k, shards, block)
    assert lay.padded >= k and lay.padded - k < shards * (8 * lay.blocks + lay.blocks)


def test_the_search_never_forms_the_full_distance_matrix():
  mesh = mesh_of(1)
  layout = Layout.of(1003, 1, 64)  # 16 blocks of 64 in one shard of 1024
  shape = lambda shape, spec: jax.ShapeDtypeStruct(shape, np.float32, sharding=jax.NamedSharding(mesh, spec))
  args = (shape((layout.padded, 48), kmeans.TABLE_SPEC), shape((512, 48), kmeans.POINTS_SPEC))
  hlo = kmeans.make_assign(mesh, layout).lower(*args).compile().as_text()
  assert "f32[512,64]" in hlo and "[512,1024]" not in hlo and "[1024,512]" not in hlo
