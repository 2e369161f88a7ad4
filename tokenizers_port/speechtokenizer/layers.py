"""SEANet building blocks in channels-last layout [B, T, C]: padded convs and activations.

Every conv reproduces `SConv1d` (non-causal): total padding (k-1)*d - (s-1), right = total//2,
left = the rest, extra right padding so a clip of L steps gives ceil(L/s) frames, reflect mode,
and zeros appended first when a clip is no longer than the pad. Padding is built per clip from
`lengths` (the valid steps of each row), so a row of a padded batch gets exactly what it would get
alone. Kernels with k == 2*s run as one matmul over s-sample blocks; others as im2col matmuls.
"""

import jax
import jax.numpy as jnp
from flax import nnx

HIGHEST = jax.lax.Precision.HIGHEST


def _ceil_div(a, b):
  return -((-a) // b)


def _extra_padding(length, kernel: int, stride: int, total: int):
  """`get_extra_padding_for_conv1d`; works on Python ints and int arrays alike."""
  n_frames = _ceil_div(length - kernel + total, stride) + 1
  return (n_frames - 1) * stride + (kernel - total) - length


def reflect_pad(x, lengths, kernel: int, stride: int, dilation: int):
  """Pads [B, T, C] for a VALID conv that yields ceil(T/stride) frames, per-clip reflect edges.

  With lengths=None every row is T long and this is `pad1d(..., 'reflect')` of the reference.
  Otherwise steps past each clip are zeroed (which is also the reference's zero pre-padding of
  short clips), the left edge is the same for all clips, and only the few reflected steps after
  each clip's end are gathered and written per row: no full-size gather.
  """
  t = x.shape[1]
  total = (kernel - 1) * dilation - (stride - 1)
  right = total // 2
  left = total - right
  extra = _extra_padding(t, kernel, stride, total)
  if lengths is None and t > max(left, right + extra):
    return jnp.pad(x, ((0, 0), (left, right + extra), (0, 0)), mode="reflect")
  if lengths is None:
    lengths = jnp.full((x.shape[0],), t, jnp.int32)
  x = mask_time(x, lengths)
  xz = jnp.pad(x, ((0, 0), (0, max(0, left + 1 - t)), (0, 0)))
  left_part = jnp.flip(xz[:, 1:left + 1], axis=1)
  # After each clip: reflect about its last step (about the zero-extended end for short clips).
  width = right + stride  # >= right + that clip's extra padding
  clip_extra = _extra_padding(lengths, kernel, stride, total)
  ext = jnp.where(lengths <= jnp.maximum(left, right + clip_extra),
                  jnp.maximum(left, right + clip_extra) + 1, lengths)[:, None]
  u = lengths[:, None] + jnp.arange(width)[None, :]
  src = jnp.where(u < ext, u, 2 * (ext - 1) - u)
  valid = (src >= 0) & (src < lengths[:, None])
  tail = jnp.take_along_axis(x, jnp.clip(src, 0, t - 1)[:, :, None], axis=1)
  tail = jnp.where(valid[:, :, None], tail, 0.0)
  out = jnp.concatenate([left_part, x, jnp.zeros((x.shape[0], right + extra + width, x.shape[2]),
                                                  x.dtype)], axis=1)
  put = jax.vmap(lambda row, vals, start: jax.lax.dynamic_update_slice(row, vals, (start, 0)))
  out = put(out, tail, left + lengths)
  return out[:, :left + t + right + extra]


def mask_time(x, lengths):
  """Zeroes steps past each clip's length (so they add nothing to a transposed conv)."""
  if lengths is None:
    return x
  keep = jnp.arange(x.shape[1])[None, :] < lengths[:, None]
  return jnp.where(keep[:, :, None], x, 0.0)


def out_lengths(lengths, stride: int):
  return None if lengths is None else _ceil_div(lengths, stride)


class Conv1d(nnx.Module):
  """`SConv1d` with weight norm folded: kernel [k, C_in, C_out] (WIO), bias [C_out]."""

  def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, dilation: int = 1):
    self.kernel_size, self.stride, self.dilation = kernel, stride, dilation
    self.kernel = nnx.Param(jnp.zeros((kernel, c_in, c_out), jnp.float32))
    self.bias = nnx.Param(jnp.zeros((c_out,), jnp.float32))

  def __call__(self, x, lengths=None):
    k, s, d = self.kernel_size, self.stride, self.dilation
    w = self.kernel[...]
    c_in, c_out = w.shape[1], w.shape[2]
    if k == 1 and s == 1:
      return jnp.einsum("btc,cd->btd", x, w[0], precision=HIGHEST) + self.bias[...]
    xp = reflect_pad(x, lengths, k, s, d)
    n_out = _ceil_div(x.shape[1], s)
    if k == 2 * s and d == 1:
      # Frame t reads blocks t and t+1 of s samples: one matmul, then add shifted halves.
      blocks = xp.reshape(xp.shape[0], n_out + 1, s * c_in)
      w2 = jnp.concatenate([w[:s].reshape(s * c_in, c_out), w[s:].reshape(s * c_in, c_out)], 1)
      y = jnp.einsum("btc,cd->btd", blocks, w2, precision=HIGHEST)
      return y[:, :-1, :c_out] + y[:, 1:, c_out:] + self.bias[...]
    if s == 1:
      cols = jnp.concatenate([xp[:, j * d:j * d + n_out] for j in range(k)], axis=-1)
      return jnp.einsum("btc,cd->btd", cols, w.reshape(k * c_in, c_out),
                        precision=HIGHEST) + self.bias[...]
    y = jax.lax.conv_general_dilated(xp, w, (s,), "VALID", rhs_dilation=(d,),
                                     dimension_numbers=("NWC", "WIO", "NWC"), precision=HIGHEST)
    return y + self.bias[...]


class ConvTranspose1d(nnx.Module):
  """`SConvTranspose1d` (non-causal, k == 2*s): kernel [k, C_in, C_out], bias [C_out].

  Output blocks of s samples: block t = x[t] @ W[:s] + x[t-1] @ W[s:], then the reference's
  fixed trim (right = (k-s)//2, left = the rest). Steps past `lengths` must already be zero.
  """

  def __init__(self, c_in: int, c_out: int, kernel: int, stride: int):
    if kernel != 2 * stride:
      raise ValueError(f"ConvTranspose1d: kernel {kernel} must be 2*stride ({stride})")
    self.kernel_size, self.stride = kernel, stride
    self.kernel = nnx.Param(jnp.zeros((kernel, c_in, c_out), jnp.float32))
    self.bias = nnx.Param(jnp.zeros((c_out,), jnp.float32))

  def __call__(self, x):
    s = self.stride
    w = self.kernel[...]
    b, t, c_in = x.shape
    c_out = w.shape[2]
    wm = jnp.transpose(w, (1, 0, 2)).reshape(c_in, 2 * s * c_out)
    z = jnp.einsum("btc,cd->btd", x, wm, precision=HIGHEST).reshape(b, t, 2, s * c_out)
    zero = jnp.zeros((b, 1, s * c_out), x.dtype)
    blocks = (jnp.concatenate([z[:, :, 0], zero], 1) + jnp.concatenate([zero, z[:, :, 1]], 1))
    y = blocks.reshape(b, (t + 1) * s, c_out)
    total = self.kernel_size - s
    right = total // 2
    left = total - right
    return y[:, left:y.shape[1] - right] + self.bias[...]


class Snake(nnx.Module):
  """x + sin(alpha x)^2 / (alpha + 1e-9), alpha per channel."""

  def __init__(self, channels: int):
    self.alpha = nnx.Param(jnp.ones((channels,), jnp.float32))

  def __call__(self, x):
    a = self.alpha[...]
    return x + jnp.reciprocal(a + 1e-9) * jnp.sin(a * x) ** 2


def make_activation(name: str, channels: int):
  if name == "Snake":
    return Snake(channels)
  return jax.nn.elu  # ELU with alpha 1 (the released config)
