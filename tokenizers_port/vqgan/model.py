"""VQGAN encoder, quantizer and decoder in flax.nnx, NHWC.

Attribute names follow taming-transformers (`encoder.down[i].block[j]`, `mid.block_1`, ...) so a
taming `state_dict` key maps onto a parameter path by renaming the leaf only; LlamaGen's names are
mapped onto the same tree by `torch_keys.py`.
"""

import typing

import jax
import jax.numpy as jnp
from flax import nnx

from tokenizers_port.vqgan import winograd
from tokenizers_port.vqgan.config import VQGANConfig

# "winograd" is winograd.DEFAULT; "winograd-<variant>" picks one of winograd.VARIANTS.
CONV_IMPLS = ("direct", "winograd") + tuple(f"winograd-{v}" for v in winograd.VARIANTS)


class WinogradKernel(nnx.Variable):
  """A 3x3 kernel already in the Winograd domain: derived from the `kernel` Param, never saved."""


class Conv3x3(nnx.Conv):
  """3x3, stride 1, padding 1 conv; `impl='winograd...'` runs it as Winograd F(mxm, 3x3), which
  needs up to 4x fewer multiplies (the fast path on CPU; XLA's direct conv is better on GPU/TPU)."""

  def __init__(self, cin, cout, rngs, dtype, impl):
    if impl not in CONV_IMPLS:
      raise ValueError(f"conv_impl={impl!r} must be one of {CONV_IMPLS}")
    super().__init__(cin, cout, (3, 3), padding=((1, 1), (1, 1)), dtype=dtype, rngs=rngs)
    self.impl = impl
    self.winograd_kernel = nnx.data(None)

  @property
  def variant(self):
    return self.impl.partition("-")[2] or winograd.DEFAULT

  @property
  def uses_winograd(self) -> bool:
    return self.impl != "direct" and self.in_features >= 16  # Narrow inputs (RGB) gain nothing.

  def cache_winograd_kernel(self):
    """Transform the kernel once, not on every call (costly next to small-map convs)."""
    if self.uses_winograd:
      u = winograd.transform_kernel(self.kernel[...], self.variant)
      self.winograd_kernel = WinogradKernel(u)

  def __call__(self, x):
    if not self.uses_winograd:
      return super().__call__(x)
    x = x.astype(self.dtype or x.dtype)
    u = (self.winograd_kernel[...] if self.winograd_kernel is not None
         else winograd.transform_kernel(self.kernel[...], self.variant))
    return winograd.conv3x3(x, None, self.bias[...].astype(x.dtype), self.variant,
                            u=u.astype(x.dtype))


def cache_winograd_kernels(model: nnx.Module) -> None:
  """Precompute the transformed kernel of every Winograd conv in `model` (any submodule too).
  Inference only: the cache goes stale if the Params change. Costs 4x (F(4x4)) the 3x3 weights'
  memory."""
  for _, m in nnx.iter_modules(model):
    if isinstance(m, Conv3x3):
      m.cache_winograd_kernel()


class Build(typing.NamedTuple):
  """What every layer constructor needs: the config, rngs, compute dtype and 3x3 conv impl."""
  cfg: VQGANConfig
  rngs: nnx.Rngs
  dtype: typing.Any
  impl: str


def _conv(cin, cout, k, b: Build, stride=1, padding=None):
  if k == 3 and stride == 1 and padding is None:
    return Conv3x3(cin, cout, b.rngs, b.dtype, b.impl)
  if padding is None:
    padding = ((k // 2, k // 2),) * 2
  return nnx.Conv(cin, cout, (k, k), strides=stride, padding=padding, dtype=b.dtype, rngs=b.rngs)


def _norm(c, b: Build):
  return GroupNorm(c, b.cfg.num_groups, b.cfg.norm_eps)


class GroupNorm(nnx.Module):
  """torch.nn.GroupNorm over NHWC: statistics in float32, two-pass variance as torch."""

  def __init__(self, channels: int, num_groups: int, eps: float):
    if channels % num_groups:
      raise ValueError(f"GroupNorm: {channels} channels not divisible into {num_groups} groups")
    self.num_groups, self.eps = num_groups, eps
    self.scale = nnx.Param(jnp.ones((channels,), jnp.float32))
    self.bias = nnx.Param(jnp.zeros((channels,), jnp.float32))

  def __call__(self, x):
    b, h, w, c = x.shape
    cg = c // self.num_groups
    xf = x.astype(jnp.float32)

    def group_mean(t):
      # Per channel over W, then over H (contiguous-channel column sums vectorise; reducing the
      # 4-wide channel group innermost did not), then over the group's channels. Short partial
      # sums also matter: one float32 accumulator over 256x256x4 values loses ~1e-5 relative.
      s = jnp.sum(jnp.sum(t, axis=2), axis=1)                                # [B, C]
      s = jnp.sum(s.reshape(b, self.num_groups, cg), axis=2) / (h * w * cg)  # [B, G]
      return jnp.repeat(s, cg, axis=1)[:, None, None, :]                     # [B, 1, 1, C]

    mean = group_mean(xf)
    var = group_mean(jnp.square(xf - mean))
    # Fold the per-group inverse std and the per-channel affine into one multiply-add.
    inv = jax.lax.rsqrt(var + self.eps) * self.scale[...]
    return (xf * inv + (self.bias[...] - mean * inv)).astype(x.dtype)


class ResnetBlock(nnx.Module):
  def __init__(self, cin, cout, b: Build):
    self.norm1 = _norm(cin, b)
    self.conv1 = _conv(cin, cout, 3, b)
    self.norm2 = _norm(cout, b)
    self.conv2 = _conv(cout, cout, 3, b)
    # Dropout is 0 in every released config and inference never applies it.
    self.nin_shortcut = _conv(cin, cout, 1, b) if cin != cout else None

  def __call__(self, x):
    h = self.conv1(jax.nn.silu(self.norm1(x)))
    h = self.conv2(jax.nn.silu(self.norm2(h)))
    if self.nin_shortcut is not None:
      x = self.nin_shortcut(x)
    return x + h


class AttnBlock(nnx.Module):
  """Single-head self-attention over all positions of the feature map."""

  def __init__(self, c, b: Build):
    self.norm = _norm(c, b)
    self.q = _conv(c, c, 1, b)
    self.k = _conv(c, c, 1, b)
    self.v = _conv(c, c, 1, b)
    self.proj_out = _conv(c, c, 1, b)

  def __call__(self, x):
    b, h, w, c = x.shape
    n = self.norm(x)
    q, k, v = (f(n).reshape(b, h * w, c) for f in (self.q, self.k, self.v))
    att = jax.nn.softmax(jnp.einsum("bic,bjc->bij", q, k) * (c ** -0.5), axis=-1)
    out = jnp.einsum("bij,bjc->bic", att, v).reshape(b, h, w, c)
    return x + self.proj_out(out)


class Downsample(nnx.Module):
  """Zero pad right/bottom by one, then a stride-2 3x3 conv with no padding (taming's layout)."""

  def __init__(self, c, b):
    self.conv = _conv(c, c, 3, b, stride=2, padding=((0, 1), (0, 1)))

  def __call__(self, x):
    return self.conv(x)


class Upsample(nnx.Module):
  """Nearest-neighbour x2 then a 3x3 conv."""

  def __init__(self, c, b):
    self.conv = _conv(c, c, 3, b)

  def __call__(self, x):
    b, h, w, c = x.shape
    x = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c))
    return self.conv(x.reshape(b, 2 * h, 2 * w, c))


class Level(nnx.Module):
  """The res blocks of one resolution, each optionally followed by attention, then a resampler."""

  def __init__(self, blocks, attns, downsample=None, upsample=None):
    self.block = nnx.List(blocks)
    self.attn = nnx.List(attns)
    self.downsample, self.upsample = downsample, upsample

  def __call__(self, x):
    for i, block in enumerate(self.block):
      x = block(x)
      if len(self.attn):
        x = self.attn[i](x)
    for resample in (self.downsample, self.upsample):
      if resample is not None:
        x = resample(x)
    return x


class Mid(nnx.Module):
  def __init__(self, c, b: Build):
    self.block_1 = ResnetBlock(c, c, b)
    self.attn_1 = AttnBlock(c, b)
    self.block_2 = ResnetBlock(c, c, b)

  def __call__(self, x):
    return self.block_2(self.attn_1(self.block_1(x)))


def _level(cin, cout, n_blocks, with_attn, b: Build, **resample):
  blocks, attns = [], []
  for _ in range(n_blocks):
    blocks.append(ResnetBlock(cin, cout, b))
    cin = cout
    if with_attn:
      attns.append(AttnBlock(cout, b))
  return Level(blocks, attns, **resample)


class Encoder(nnx.Module):
  def __init__(self, b: Build):
    cfg = b.cfg
    ch, mult = cfg.ch, cfg.encoder_ch_mult
    self.conv_in = _conv(cfg.in_channels, ch, 3, b)
    levels, cin = [], ch
    for i, m in enumerate(mult):
      last = i == len(mult) - 1
      down = None if last else Downsample(ch * m, b)
      levels.append(_level(cin, ch * m, cfg.num_res_blocks, i in cfg.encoder_attn_levels,
                           b, downsample=down))
      cin = ch * m
    self.down = nnx.List(levels)
    self.mid = Mid(cin, b)
    self.norm_out = _norm(cin, b)
    self.conv_out = _conv(cin, cfg.z_channels, 3, b)

  def __call__(self, x):
    h = self.conv_in(x)
    for level in self.down:
      h = level(h)
    h = self.mid(h)
    return self.conv_out(jax.nn.silu(self.norm_out(h)))


class Decoder(nnx.Module):
  def __init__(self, b: Build):
    cfg = b.cfg
    ch, mult = cfg.ch, cfg.decoder_ch_mult
    cin = ch * mult[-1]
    self.conv_in = _conv(cfg.z_channels, cin, 3, b)
    self.mid = Mid(cin, b)
    levels = [None] * len(mult)
    for i in reversed(range(len(mult))):
      up = Upsample(ch * mult[i], b) if i != 0 else None
      levels[i] = _level(cin, ch * mult[i], cfg.num_res_blocks + 1, i in cfg.decoder_attn_levels,
                         b, upsample=up)
      cin = ch * mult[i]
    self.up = nnx.List(levels)  # up[i] works at level i; run from the coarsest level down.
    self.norm_out = _norm(cin, b)
    self.conv_out = _conv(cin, cfg.out_channels, 3, b)

  def __call__(self, z):
    h = self.mid(self.conv_in(z))
    for level in reversed(self.up):
      h = level(h)
    return self.conv_out(jax.nn.silu(self.norm_out(h)))


def _l2_normalize(x):
  # torch.nn.functional.normalize: x / max(||x||, 1e-12).
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class Quantizer(nnx.Module):
  """Nearest codebook entry by squared Euclidean distance (on unit vectors when l2_norm)."""

  def __init__(self, n_embed, dim, l2_norm, *, rngs: nnx.Rngs):
    self.l2_norm = l2_norm
    self.embedding = nnx.Param(
        jax.random.uniform(rngs.params(), (n_embed, dim), jnp.float32, -1 / n_embed, 1 / n_embed))

  def codebook(self):
    e = self.embedding[...]
    return _l2_normalize(e) if self.l2_norm else e

  def __call__(self, z):
    """z [B, h, w, d] float -> int32 codes [B, h*w] in raster order."""
    b, h, w, d = z.shape
    z = z.reshape(b, h * w, d).astype(jnp.float32)
    if self.l2_norm:
      z = _l2_normalize(z)
    e = self.codebook()
    # Same expansion as both references, ||z||^2 + ||e||^2 - 2 z.e, so near-ties round alike.
    dist = (jnp.sum(z * z, axis=-1, keepdims=True) + jnp.sum(e * e, axis=-1)
            - 2 * jnp.einsum("bnd,kd->bnk", z, e))
    return jnp.argmin(dist, axis=-1).astype(jnp.int32)

  def lookup(self, codes, h, w):
    """int codes [B, h*w] -> code vectors [B, h, w, d]."""
    return jnp.take(self.codebook(), codes, axis=0).reshape(codes.shape[0], h, w, -1)


class VQGAN(nnx.Module):
  def __init__(self, cfg: VQGANConfig, *, rngs: nnx.Rngs, dtype=jnp.float32,
               conv_impl: str = "direct"):
    b = Build(cfg, rngs, dtype, conv_impl)
    self.encoder = Encoder(b)
    self.quant_conv = _conv(cfg.z_channels, cfg.embed_dim, 1, b)
    self.quantize = Quantizer(cfg.n_embed, cfg.embed_dim, cfg.l2_norm, rngs=rngs)
    self.post_quant_conv = _conv(cfg.embed_dim, cfg.z_channels, 1, b)
    self.decoder = Decoder(b)

  def encode_latents(self, x):
    """x [B, H, W, C] in [-1, 1] -> pre-quantisation latents [B, H/f, W/f, embed_dim]."""
    return self.quant_conv(self.encoder(x)).astype(jnp.float32)

  def encode(self, x):
    return self.quantize(self.encode_latents(x))

  def decode_latents(self, zq):
    """Quantised latents [B, h, w, embed_dim] -> images [B, H, W, C], nominally in [-1, 1]."""
    return self.decoder(self.post_quant_conv(zq)).astype(jnp.float32)

  def decode(self, codes, h, w):
    return self.decode_latents(self.quantize.lookup(codes, h, w))
