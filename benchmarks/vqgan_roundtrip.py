"""decode(encode(x)) smoke images for both VQGAN families, and the few-dozen-photo agreement run.

  python benchmarks/vqgan_roundtrip.py [--out docs/images] [--agreement] [--photos N]

No released weights can be fetched here, so each family is the official config random-initialised
(codebook drawn from real encoder outputs) and the picture shows, per photo: the input, the
PyTorch reference's decode(encode(x)), ours, and 16x the absolute difference of the two. With
random weights the reconstructions are not the photo; the point is that both columns agree.
--agreement also encodes every bundled photograph not used for the codebook at 256 px and prints
code agreement with the reference plus the largest latent and decoder differences, and each side's
latent error against a float64 run of the reference, one photo per call and all in one call.
A correctness run, not a speed benchmark: its one time includes compilation. It still prints the
protocol's machine header and load (benchmarks/protocol.py).
"""

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from benchmarks import protocol  # noqa: E402
from tokenizers_port.vqgan import convert, load  # noqa: E402
from tokenizers_port.vqgan import reference as ref  # noqa: E402

OFFICIAL = {"taming": ref.TAMING_OFFICIAL, "llamagen": ref.LLAMAGEN_OFFICIAL}


def to_uint8(x_nhwc):
  return np.round((np.clip(x_nhwc, -1, 1) + 1) * 127.5).astype(np.uint8)


def roundtrip(flavor, photos, calib, a):
  model = ref.build(flavor, OFFICIAL[flavor], seed=2)
  ref.calibrate_codebook(model, ref.to_nchw(calib))
  tmp = tempfile.mkdtemp()
  ref.save_released_layout(model, flavor, os.path.join(tmp, "ckpt"))
  convert.convert(os.path.join(tmp, "ckpt"), flavor, os.path.join(tmp, "flax"))
  tok = load(os.path.join(tmp, "flax"), conv_impl=a.conv_impl)
  test = photos if a.agreement else photos[:a.show]
  t = time.perf_counter()
  with jax.default_matmul_precision("highest"):
    codes = np.asarray(tok.encode(test))
    ours = np.asarray(tok.decode(codes))
  t_flax = time.perf_counter() - t
  x = ref.to_nchw(test)
  want_codes = ref.codes(model, x).numpy()
  theirs = ref.decode_codes(model, torch.from_numpy(want_codes), 16, 16)
  theirs = to_uint8(theirs.permute(0, 2, 3, 1).numpy())
  show = slice(0, a.show)
  diff = np.clip(16 * np.abs(ours[show].astype(int) - theirs[show].astype(int)), 0, 255)
  rows = [np.concatenate(list(r), axis=1) for r in zip(test[show], theirs[show], ours[show],
                                                       diff.astype(np.uint8))]
  os.makedirs(a.out, exist_ok=True)
  path = os.path.join(a.out, f"vqgan_roundtrip_{flavor}.png")
  Image.fromarray(np.concatenate(rows, axis=0)).save(path)
  agree = (codes == want_codes).mean()
  print(f"{flavor}: wrote {path} (columns: input, torch, flax, 16x|diff|); "
        f"{len(test)} photos, code agreement {agree:.5f} "
        f"({int((codes != want_codes).sum())} of {codes.size} differ), "
        f"uint8 max |flax - torch| on the shown decodes {int(diff.max()) // 16}, "
        f"flax encode+decode incl. compile {t_flax:.0f} s")
  if a.agreement:
    with jax.default_matmul_precision("highest"):
      z = np.asarray(tok.encode_latents(x.permute(0, 2, 3, 1).numpy()))
    dz = np.abs(z - ref.latents(model, x).permute(0, 2, 3, 1).numpy()).max()
    k = min(4, len(test))
    dec = ref.decode_codes(model, torch.from_numpy(want_codes[:k]), 16, 16).permute(0, 2, 3, 1)
    with jax.default_matmul_precision("highest"):
      dd = np.abs(np.asarray(tok.decode_float(want_codes[:k])) - dec.numpy()).max()
    print(f"{flavor}: max |latent diff| {dz:.2e} over {len(test)} photos, "
          f"max |decoder diff| {dd:.2e} over {k}")
    print(f"{flavor}: latent error against a float64 run of the reference, " + float64_errors(model, tok, x))


def float64_errors(model, tok, x) -> str:
  """Both sides' float32 latents, one photo per call and all in one call, against float64."""
  import copy
  m64 = copy.deepcopy(model).double()
  with torch.no_grad():
    truth = np.concatenate([ref.latents(m64, x[i:i + 1].double()).permute(0, 2, 3, 1).numpy()
                            for i in range(len(x))])
    torch_one = np.concatenate([ref.latents(model, x[i:i + 1]).permute(0, 2, 3, 1).numpy()
                                for i in range(len(x))])
    torch_all = ref.latents(model, x).permute(0, 2, 3, 1).numpy()
  xs = x.permute(0, 2, 3, 1).numpy()
  with jax.default_matmul_precision("highest"):
    ours_one = np.concatenate([np.asarray(tok.encode_latents(xs[i:i + 1])) for i in range(len(x))])
    ours_all = np.asarray(tok.encode_latents(xs))
  err = {name: np.abs(z - truth).max() for name, z in
         (("ours, one per call", ours_one), ("ours, one call", ours_all),
          ("torch float32, one per call", torch_one), ("torch float32, one call", torch_all))}
  return "; ".join(f"{name} {e:.1e}" for name, e in err.items())


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--out", default="docs/images")
  p.add_argument("--flavors", default="taming,llamagen")
  p.add_argument("--show", type=int, default=3, help="photos in the picture")
  p.add_argument("--agreement", action="store_true")
  p.add_argument("--photos", type=int, default=0, help="score only the first N test photos (0: all)")
  p.add_argument("--conv-impl", default="direct", choices=("direct", "winograd"))
  a = p.parse_args()
  run = protocol.start("VQGAN decode(encode(x)) pictures and agreement")
  photos = ref.photographs(256)
  calib = photos[1::3]  # Codebook source; never scored.
  test = np.delete(photos, np.arange(1, len(photos), 3), axis=0)
  if a.photos:
    test = test[:a.photos]
  for flavor in a.flavors.split(","):
    roundtrip(flavor, test, calib, a)
  run.finish()


if __name__ == "__main__":
  main()
