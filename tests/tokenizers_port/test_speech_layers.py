"""SpeechTokenizer port building blocks vs the reference's own helpers, at clip edges."""


import jax.numpy as jnp
import numpy as np
import pytest

import torch  # noqa: E402  (the test extra installs the references; missing is an error)

from tokenizers_port.speechtokenizer import reference  # noqa: E402
from tokenizers_port.speechtokenizer.layers import reflect_pad  # noqa: E402
from tokenizers_port.speechtokenizer.lstm import reverse_within  # noqa: E402


@pytest.mark.parametrize("kernel,stride,dilation", [(7, 1, 1), (3, 1, 2), (4, 2, 1), (10, 5, 1),
                                                    (16, 8, 1)])
def test_reflect_pad_per_clip_matches_pad1d(kernel, stride, dilation):
  reference.import_reference()
  from speechtokenizer.modules.conv import get_extra_padding_for_conv1d, pad1d
  lengths = np.array([1, 2, 3, 5, 8, 11, 12, 17, 23, 24])  # includes clips shorter than the pad
  t = int(lengths.max())
  rng = np.random.default_rng(0)
  x = rng.standard_normal((len(lengths), t, 3)).astype(np.float32)
  got = np.asarray(reflect_pad(jnp.asarray(x), jnp.asarray(lengths, jnp.int32), kernel, stride,
                               dilation))
  total = (kernel - 1) * dilation - (stride - 1)
  for i, n in enumerate(lengths):
    clip = torch.from_numpy(x[i:i + 1, :n].transpose(0, 2, 1).copy())
    extra = get_extra_padding_for_conv1d(clip, kernel, stride, total)
    want = pad1d(clip, (total - total // 2, total // 2 + extra), mode="reflect")[0].numpy().T
    np.testing.assert_array_equal(got[i, :want.shape[0]], want, err_msg=f"clip length {n}")
  if t > kernel:  # the static path (every row full length) is the same op
    full = np.asarray(reflect_pad(jnp.asarray(x), None, kernel, stride, dilation))
    np.testing.assert_array_equal(full[-1], got[-1])


def test_reverse_within_lengths():
  x = jnp.arange(2 * 6, dtype=jnp.float32).reshape(2, 6)[:, :, None]
  got = np.asarray(reverse_within(x, jnp.array([4, 6])))[:, :, 0]
  np.testing.assert_array_equal(got[0, :4], [3, 2, 1, 0])
  np.testing.assert_array_equal(got[1], [11, 10, 9, 8, 7, 6])
