"""code_usage.usage against hand-computed counts and entropies."""

import math

import numpy as np
import pytest

from mio_jax.evaluate.code_usage import image_codes, usage
from mio_jax.data.shards import Sample


def test_usage_of_a_hand_counted_histogram():
  u = usage(np.array([0, 0, 1, 3]), 4)  # shares 1/2, 1/4, 1/4: entropy 1.5 ln 2
  assert (u["codes"], u["used"], u["used_share"], u["max_used_share"]) == (4, 3, 0.75, 1.0)
  assert u["perplexity"] == pytest.approx(2 ** 1.5)
  assert usage(np.arange(6), 6)["perplexity"] == pytest.approx(6.0)  # uniform: K
  assert usage(np.full(9, 2), 10)["perplexity"] == pytest.approx(1.0)
  assert usage(np.array([1, 2]), 8)["max_used_share"] == 0.25  # 2 codes cannot use more than 2 ids
  with pytest.raises(ValueError, match=r"outside \[0, 4\)"):
    usage(np.array([0, 4]), 4)


def test_image_codes_takes_every_image_part_in_order():
  parts = [{"type": "image", "codes": np.array([[3, 1], [4, 1]])}, {"type": "text", "text": "x"},
           {"type": "image", "codes": np.array([[5, 9], [2, 6]])}]
  sample = Sample(kind="interleaved", source="s:1", parts=parts)
  np.testing.assert_array_equal(image_codes([sample]), [3, 1, 4, 1, 5, 9, 2, 6])
  assert math.isclose(usage(image_codes([sample]), 10)["used_share"], 0.7)
