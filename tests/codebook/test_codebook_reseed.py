"""Empty-cluster re-seeding and the utilisation metrics on cases worked out by hand.

20 centroids c_i = (10 i, 0) over 8 devices (shards of 8 ids: 0-7, 8-15, 16-19); one point at
(10 i, 0.5) for every i but 3, 9 and 17, and three outliers: (0, 50) (nearest c0, d^2 2500),
(190, -40) (c19, 1600), (41, 30) (c4, 901). After one pass (Lloyd) or one step of a one-step pass
(mini-batch, whose first update is the batch mean): the empty clusters 3, 9, 17, in id order across
the shards, take the farthest points first: c3 = (0, 50), c9 = (190, -40), and with a pool of 2
c17 keeps its place until a later pass; c0, c4, c19 move to their two points' mean.
"""

import jax
import numpy as np
import pytest

from mio_jax.codebook import kmeans
from mio_jax.codebook.search import Layout
from test_codebook_search import mesh_of

OUTLIERS = np.array([[0, 50], [190, -40], [41, 30]], np.float32)


def hand_case(twice=()):
  """The points above (those of `twice` doubled), then padding rows of weight 0 up to 40."""
  centroids = np.stack([10.0 * np.arange(20), np.zeros(20)], axis=1).astype(np.float32)
  points = [[10.0 * i, 0.5] for i in range(20) if i not in (3, 9, 17) for _ in range(1 + (i in twice))]
  x = np.concatenate([np.array(points, np.float32), OUTLIERS])
  n = len(x)
  x = np.concatenate([x, np.zeros((40 - n, 2), np.float32)])
  w = np.array([1.0] * n + [0.0] * (40 - n), np.float32)
  return centroids, x, w


def run(update, pool, method="none", min_usage=0.0, twice=()):
  mesh = mesh_of(8)
  layout = Layout.of(20, 8, 8)
  assert (layout.shard_size, layout.padded) == (8, 64)
  options = kmeans.Options(update=update, reseed="farthest", reseed_pool=pool, utilisation=method,
                           usage_decay=0.0, min_usage=min_usage, steps_per_pass=1)
  c, x, w = hand_case(twice)
  state = kmeans.new_state(mesh, layout, jax.numpy.asarray(c), options)
  put = lambda a, spec: jax.device_put(a, jax.NamedSharding(mesh, spec))
  step = kmeans.make_step(mesh, layout, options)
  state, _ = step(state, put(x, kmeans.POINTS_SPEC), put(w, kmeans.WEIGHTS_SPEC))
  state, metrics = kmeans.make_end_pass(mesh, layout, options)(state)
  return np.asarray(state["centroids"])[:20], jax.device_get(metrics), int(state["reseeded"])


def expected(c17):
  want = np.stack([10.0 * np.arange(20), np.full(20, 0.5)], axis=1)
  want[0], want[4], want[19] = (0, 25.25), (40.5, 15.25), (190, -19.75)
  want[3], want[9], want[17] = (0, 50), (190, -40), c17
  return want


@pytest.mark.parametrize("update", ["lloyd", "minibatch"])
def test_empty_clusters_take_the_farthest_points_in_id_order(update):
  got, metrics, reseeded = run(update, pool=2)
  np.testing.assert_allclose(got, expected(c17=(170, 0)), rtol=0, atol=1e-5)
  assert reseeded == 2
  # 17 of 20 clusters used: 14 with one point, 3 with two (of 20 points)
  p = np.array([1 / 20] * 14 + [2 / 20] * 3)
  assert metrics["used_share"] == pytest.approx(17 / 20)
  assert metrics["usage_perplexity"] == pytest.approx(np.exp(-np.sum(p * np.log(p))), rel=1e-5)


def test_a_pool_of_three_reseeds_all_three():
  got, _, reseeded = run("lloyd", pool=3)
  np.testing.assert_allclose(got, expected(c17=(41, 30)), rtol=0, atol=1e-5)
  assert reseeded == 3


def test_usage_regulariser_also_reseeds_a_cluster_used_under_the_threshold():
  # Every point doubled but c12's: 36 points; c12 holds 1 / 36 = 0.028 of them, under 0.6 x 1/20
  # = 0.03 (Lloyd: the pass's share; mini-batch with decay 0: the batch's), every other used
  # cluster 2 / 36 or more. Dead in id order: 3, 9, 12 (rare), 17; a pool of 3 leaves 17 waiting.
  for update in ("lloyd", "minibatch"):
    twice = [i for i in range(20) if i != 12]
    got, _, reseeded = run(update, pool=3, method="usage_ema", min_usage=0.6, twice=twice)
    want = np.stack([10.0 * np.arange(20), np.full(20, 0.5)], axis=1)
    want[0], want[4], want[19] = (0, 17), (121 / 3, 31 / 3), (190, -13)
    want[3], want[9], want[12], want[17] = (0, 50), (190, -40), (41, 30), (170, 0)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4, err_msg=update)
    assert reseeded == 3
    # without the regulariser c12 keeps its point
    got, _, _ = run(update, pool=3, twice=twice)
    np.testing.assert_allclose(got[12], (120, 0.5), atol=1e-5)
