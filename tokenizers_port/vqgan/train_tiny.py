"""Train the tiny taming-flavour VQGAN on the mini corpus images, for `make demo`.

  python -m tokenizers_port.vqgan.train_tiny --out data/tokenizers/tiny_vqgan   # ~3 min, 2 CPUs

The random tiny VQGAN (ch=4, mio_jax/tokenize/tiny_tokenizers.py) has codes that carry little colour
and decodes noise. This trains its architecture (ch=8, see `_layout`) as a plain VQ-VAE (MSE +
codebook + 0.25 x commitment, straight-through, the port's quantizer) from a block-mean colour
autoencoder (`colour_path_init`; latent channels 3-7 start and stay 0, so codes are block colours).
After an autoencoder phase, rows [0, active) come from k-means on latents, dead codes are re-seeded,
rows >= active are put out of reach. Whole images at 128 px (4x cheaper; GroupNorm statistics stay
whole-image ones; the convs are size-agnostic), encoding 256 px.
"""

import argparse
import glob
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from PIL import Image

from tokenizers_port.vqgan import config as vqgan_config, params_io
from tokenizers_port.vqgan.config import tiny_config
from tokenizers_port.vqgan.load import load
from tokenizers_port.vqgan.model import VQGAN, AttnBlock, Downsample, ResnetBlock, Upsample

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_images(image_dir: str) -> np.ndarray:
  """Every PNG in image_dir, sorted by name -> uint8 [N, H, W, 3]."""
  files = sorted(glob.glob(os.path.join(image_dir, "*.png")))
  return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])


def to_float(images: np.ndarray, f: int) -> np.ndarray:
  """uint8 [N, H, W, 3] -> float32 in [-1, 1], box-filtered down by f."""
  n, h, w, c = images.shape
  return images.astype(np.float32).reshape(n, h // f, f, w // f, f, c).mean((2, 4)) / 127.5 - 1


CARRIER = 16.0
SILU2, DSILU2 = 1.7616, 1.0908  # silu(2), silu'(2): the read-out linearises silu around 2


def _layout(width: int) -> tuple[np.ndarray, np.ndarray]:
  """(rgb -> channels [3, width], constants [width]) of a `width`-channel activation: r, g, -r-g
  in channels 1-3, b, -b in 5-6, +-CARRIER in 0, 4 and 8 on. Each GroupNorm group's mean and
  variance then come from the constants alone (colour sums to zero per group), so colour passes
  linearly, to second order. Groups of 2 channels (ch=4: decoder.norm_out) allow no such layout."""
  w = np.zeros((3, width), np.float32)
  w[[0, 1, 2, 0, 1, 2], [1, 2, 5, 3, 3, 6]] = [1, 1, 1, -1, -1, -1]
  const = np.zeros(width, np.float32)
  const[[0, 4]] = CARRIER
  const[8:] = CARRIER * (-1.0) ** np.arange(8, width)
  return w, const


def _set_conv(conv, taps, w, bias=0.0):  # kernel <- w [cin, cout] at the taps, 0 elsewhere
  k = np.zeros(conv.kernel.shape, np.float32)
  k[tuple(zip(*taps))] = w
  conv.kernel[...] = jnp.asarray(k)
  conv.bias[...] = jnp.broadcast_to(jnp.asarray(bias, jnp.float32), conv.bias.shape)


def _set_norm_readin(norm, width, groups):
  """GroupNorm affine undoing the constants' normalisation: colour c -> c + 2 (silu near-linear)."""
  g = _layout(width)[1].reshape(groups, -1)
  norm.scale[...] = jnp.asarray(np.repeat(g.std(1), width // groups), jnp.float32)
  norm.bias[...] = jnp.asarray(np.repeat(g.mean(1), width // groups) + 2.0, jnp.float32)


def colour_path_init(model: VQGAN) -> None:
  """Start as a colour autoencoder: the encoder average-pools the colour layout to the code grid,
  the decoder upsamples it; residual/attention branches start at 0. Decode(encode(x)) is x's 16x16
  block mean colour; training refines it (300 steps from random weights never found colour)."""
  center, pool = [(1, 1)], [(0, 0), (0, 1), (1, 0), (1, 1)]
  for _, m in nnx.iter_graph(model):
    if isinstance(m, ResnetBlock):
      _set_conv(m.conv2, center, 0.0)
      if m.nin_shortcut is not None:  # widening: constants for the new channels
        cin, cout = m.nin_shortcut.kernel.shape[2:]
        bias = _layout(cout)[1]
        bias[:min(cin, cout)] -= _layout(cin)[1][:min(cin, cout)]
        _set_conv(m.nin_shortcut, [(0, 0)], np.eye(cin, cout), bias)
    elif isinstance(m, AttnBlock):
      _set_conv(m.proj_out, [(0, 0)], 0.0)
    elif isinstance(m, (Downsample, Upsample)):
      c = m.conv.kernel.shape[-1]
      taps, w = (pool, np.eye(c) / 4) if isinstance(m, Downsample) else (center, np.eye(c))
      _set_conv(m.conv, taps, w)
  enc, dec = model.encoder, model.decoder
  _set_conv(enc.conv_in, center, *_layout(enc.conv_in.kernel.shape[-1]))
  readout = np.zeros((8, 3), np.float32)  # layout channels 1, 2, 5 -> r, g, b
  readout[[1, 2, 5], [0, 1, 2]] = 1.0 / DSILU2
  for norm, conv in ((enc.norm_out, enc.conv_out), (dec.norm_out, dec.conv_out)):
    width, cout = conv.kernel.shape[2:]
    _set_norm_readin(norm, width, norm.num_groups)
    w = np.zeros((width, cout), np.float32)
    w[:8, :3] = readout
    _set_conv(conv, center, w, np.pad(np.full(3, -SILU2 / DSILU2), (0, cout - 3)))
  for conv in (model.quant_conv, model.post_quant_conv):
    _set_conv(conv, [(0, 0)], np.eye(conv.kernel.shape[2]))
  rgb_z, const = _layout(dec.conv_in.kernel.shape[-1])  # z channels 0-2 carry r, g, b
  _set_conv(dec.conv_in, center, np.eye(dec.conv_in.kernel.shape[2], 3) @ rgb_z, const)


def vq_loss(model: VQGAN, x, vq, beta):
  """VQ-VAE loss; vq=0 switches quantisation off (same compiled step for the warm-up)."""
  z = model.encode_latents(x)
  codes = model.quantize(z)
  e = model.quantize.lookup(codes, *z.shape[1:3])
  zq = z + vq * jax.lax.stop_gradient(e - z)  # straight-through estimator
  mse = jnp.mean(jnp.square(model.decode_latents(zq) - x))
  codebook = jnp.mean(jnp.square(jax.lax.stop_gradient(z) - e))
  commit = jnp.mean(jnp.square(z - jax.lax.stop_gradient(e)))
  return mse + vq * (codebook + beta * commit), (mse, z, codes)


@nnx.jit
def train_step(model, opt, x, vq, beta):
  grads, (mse, z, codes) = nnx.grad(vq_loss, has_aux=True)(model, x, vq, beta)
  opt.update(model, grads)
  return mse, z, codes


def distinct(points: np.ndarray, grid: float = 0.1) -> np.ndarray:
  """One latent per occupied grid cell, so that a flat colour (thousands of latents within ~0.02)
  weighs like one point: k-means on all latents split each into several near-identical codes."""
  return points[np.sort(np.unique(np.round(points / grid), axis=0, return_index=True)[1])]


def kmeans(points: np.ndarray, k: int, rng: np.random.Generator, iters: int = 25) -> np.ndarray:
  """Lloyd's k-means from k distinct random points; empty clusters keep their centre."""
  centres = points[rng.choice(len(points), k, replace=False)]
  for _ in range(iters):
    assign = np.argmin(((points[:, None] - centres[None]) ** 2).sum(-1), axis=1)
    for j in np.unique(assign):
      centres[j] = points[assign == j].mean(axis=0)
  return centres


def set_codebook(model: VQGAN, active_rows: np.ndarray, latent_norm: float, rng) -> None:
  """Rows [0, active) <- active_rows, the rest at 10x the largest latent/code norm in random
  directions: never a latent's nearest code (and decoding them gives garbage)."""
  n, d = model.quantize.embedding[...].shape
  far = rng.standard_normal((n - len(active_rows), d))
  far *= 10.0 * (latent_norm + np.linalg.norm(active_rows, axis=1).max()) / np.linalg.norm(
      far, axis=1, keepdims=True)
  model.quantize.embedding[...] = jnp.asarray(np.concatenate([active_rows, far]), jnp.float32)


def train(images: np.ndarray, *, ch: int = 8, steps: int = 200, warmup: int = 50,
          active: int = 256, batch: int = 8, lr: float = 3e-4, beta: float = 0.25,
          refresh_every: int = 40, downsample: int = 2, seed: int = 0, log=print) -> VQGAN:
  """warmup: autoencoder (and lr warm-up) steps; active: codebook rows in use; ch: base channels
  (4 cannot carry absolute colour through the decoder's last GroupNorm)."""
  rng, x_all = np.random.default_rng(seed), to_float(images, downsample)
  model = VQGAN(tiny_config(ch), rngs=nnx.Rngs(seed))
  colour_path_init(model)
  # lr warm-up: full-size first Adam steps wrecked the start (loss x10 in 20 steps at lr 1e-3).
  adam = optax.adam(optax.warmup_cosine_decay_schedule(0.0, lr, warmup, steps, lr * 0.05))
  # Resampling and shortcut convs keep their colour_path_init weights: their inputs carry the
  # +-CARRIER constants, so a step on them moves outputs ~16x more (a precaution, not ablated).
  fixed = ("downsample", "upsample", "nin_shortcut")
  labels = lambda params: jax.tree_util.tree_map_with_path(  # noqa: E731
      lambda path, _: "fixed" if any(f in jax.tree_util.keystr(path) for f in fixed) else "train",
      params)
  tx = optax.chain(optax.clip_by_global_norm(1.0),
                   optax.multi_transform({"train": adam, "fixed": optax.set_to_zero()}, labels))
  opt = nnx.Optimizer(model, tx, wrt=nnx.Param)
  recent, usage, t0 = [], np.zeros(active, np.int64), time.time()
  for step in range(steps):
    x, vq = jnp.asarray(x_all[rng.choice(len(x_all), batch, replace=False)]), float(step >= warmup)
    mse, z, codes = train_step(model, opt, x, vq, beta)
    recent = (recent + [np.asarray(z).reshape(-1, z.shape[-1])])[-12:]  # last 12 batches
    if step + 1 == warmup:  # quantisation starts next step: codebook from k-means
      pool = distinct(np.concatenate(recent))
      centres = kmeans(pool, min(active, len(pool)), rng)
      set_codebook(model, centres, np.linalg.norm(pool, axis=1).max(), rng)
    elif vq:
      usage += np.bincount(np.asarray(codes).ravel(), minlength=active)[:active]
      if (step + 1 - warmup) % refresh_every == 0:  # dead codes -> worst-served latents
        table, pool = np.array(model.quantize.embedding[...]), distinct(np.concatenate(recent))
        gap = ((pool[:, None] - table[None, np.flatnonzero(usage)]) ** 2).sum(-1).min(1)
        dead, worst = np.flatnonzero(usage == 0), np.argsort(-gap, kind="stable")
        table[dead[:len(pool)]] = pool[worst[:len(dead)]]
        model.quantize.embedding[...] = jnp.asarray(table)
        usage[:] = 0
    if step % 20 == 0 or step == steps - 1:
      log(f"step {step:4d}  vq {int(vq)}  mse {float(mse):.4f}  {time.time() - t0:6.1f}s")
  return model


def save(model: VQGAN, cfg: vqgan_config.VQGANConfig, out_dir: str, images: np.ndarray,
         active: int, seed: int) -> None:
  """Writes config + params; first moves the unused rows beyond the full-size latents' reach."""
  encode = nnx.jit(lambda m, x: m.encode_latents(jnp.asarray(x)))
  norm = max(np.linalg.norm(encode(model, to_float(images[i:i + 8], 1)), axis=-1).max()
             for i in range(0, len(images), 8))
  table = np.asarray(model.quantize.embedding[...])[:active]
  set_codebook(model, table, norm, np.random.default_rng(seed))
  params_io.save_model(model, cfg, out_dir)


def roundtrip_report(tok_dir: str, images: np.ndarray, png: str | None = None) -> dict:
  """Encode/decode with the saved folder at full size: PSNR, mean abs error, codes used."""
  tok = load(tok_dir)
  codes = np.concatenate([tok.encode(images[i:i + 8]) for i in range(0, len(images), 8)])
  recon = np.concatenate([tok.decode(codes[i:i + 8]) for i in range(0, len(codes), 8)])
  err = recon.astype(np.float64) - images
  if png:  # originals over reconstructions
    grid = np.concatenate([np.concatenate(list(row[:6]), axis=1) for row in (images, recon)])
    Image.fromarray(grid).save(png, optimize=True)
  return dict(psnr_db=round(10 * np.log10(255.0 ** 2 / np.mean(err ** 2)), 2), max_code=codes.max(),
              mean_abs_error=round(np.mean(np.abs(err)), 2), codes_used=len(np.unique(codes)))


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--out", default=os.path.join(ROOT, "data", "tokenizers", "tiny_vqgan"))
  p.add_argument("--images", default=os.path.join(ROOT, "data", "mini", "images"))
  p.add_argument("--png", default=os.path.join(ROOT, "docs", "images", "tiny_vqgan_roundtrip.png"))
  for name, default in (("steps", 200), ("active", 256), ("ch", 8), ("seed", 0)):
    p.add_argument(f"--{name}", type=int, default=default)  # see train()
  args = p.parse_args(argv)
  t0, images = time.time(), load_images(args.images)
  model = train(images, steps=args.steps, active=args.active, ch=args.ch, seed=args.seed)
  save(model, tiny_config(args.ch), args.out, images, args.active, args.seed)
  print(f"trained in {time.time() - t0:.0f}s -> {args.out}")
  print(roundtrip_report(args.out, images, args.png or None))


if __name__ == "__main__":
  main()
