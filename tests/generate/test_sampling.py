"""Repetition penalty, temperature and top-p against small hand-computed cases."""

import jax
import jax.numpy as jnp
import numpy as np

from mio_jax.generate.sampling import choose, repetition_penalty, top_p_mask


def test_repetition_penalty_divides_positive_and_multiplies_negative():
  logits = jnp.asarray([[2.0, -1.0, 3.0, 0.5]])
  seen = jnp.asarray([[True, True, False, False]])
  out = repetition_penalty(logits, seen, jnp.asarray([2.0]))
  np.testing.assert_allclose(out, [[1.0, -2.0, 3.0, 0.5]])


def test_top_p_keeps_smallest_set_reaching_p():
  # probs 0.5, 0.3, 0.15, 0.05 (logits = log probs), in shuffled order.
  probs = np.array([0.15, 0.5, 0.05, 0.3])
  logits = jnp.log(jnp.asarray([probs, probs]))
  out = np.asarray(top_p_mask(logits, jnp.asarray([0.7, 0.85])))
  # p=0.7: 0.5 alone < 0.7, 0.5 + 0.3 reaches it -> {0.5, 0.3}. p=0.85: adds 0.15 (0.8 < 0.85).
  np.testing.assert_array_equal(np.isfinite(out), [[False, True, False, True], [True, True, False, True]])
  np.testing.assert_allclose(out[0, [1, 3]], np.log([0.5, 0.3]), rtol=1e-6)


def test_top_p_always_keeps_the_best_id():
  out = top_p_mask(jnp.asarray([[0.0, 5.0, 1.0]]), jnp.asarray([0.0]))
  np.testing.assert_array_equal(np.isfinite(out), [[False, True, False]])


def test_temperature_zero_is_argmax_of_penalised_masked_logits():
  logits = jnp.asarray([[4.0, 3.0, 1.0, 5.0]])
  allowed = jnp.asarray([[True, True, True, False]])  # the best id (3) is masked out
  seen = jnp.asarray([[True, False, False, False]])  # 4.0 / 1.5 = 2.67 < 3.0
  tok = choose(jax.random.key(0), logits, allowed, seen, temperature=jnp.asarray([0.0]),
               top_p=jnp.asarray([1.0]), penalty=jnp.asarray([1.5]))
  assert int(tok[0]) == 1


def test_sampling_frequencies_follow_temperature_and_top_p():
  # logits log([0.6, 0.3, 0.1]); temperature 0.5 squares the probs: 0.36, 0.09, 0.01 -> /0.46.
  # top_p 0.95: mass above id 2 is (0.36 + 0.09) / 0.46 = 0.978 >= 0.95, so id 2 is cut.
  # Expected: 0.36/0.45 = 0.8, 0.2, 0.
  n = 20000
  logits = jnp.tile(jnp.log(jnp.asarray([[0.6, 0.3, 0.1]])), (n, 1))
  ones = jnp.ones((n,))
  tok = choose(jax.random.key(1), logits, jnp.ones((n, 3), bool), jnp.zeros((n, 3), bool),
               temperature=0.5 * ones, top_p=0.95 * ones, penalty=ones)
  freq = np.bincount(np.asarray(tok), minlength=3) / n
  np.testing.assert_allclose(freq, [0.8, 0.2, 0.0], atol=0.015)
  assert freq[2] == 0.0
