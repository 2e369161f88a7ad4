"""Images/s of the Flax SEED-Tokenizer-2 encode (uint8 images -> 32 codes) against the vendored
PyTorch reference (tests/tokenizers_port/seed_reference) on the same batch, in one run, on CPU,
float32 on both sides.

  python benchmarks/seed_encode.py [--config reduced|official] [--batch 2] [--rounds 3] [--threads N]

Both sides: uint8 -> CLIP-normalised float, EVA-CLIP ViT, causal Q-Former, nearest of 8192 codes
(the reference's get_codebook_indices, which also applies its small decode_task_layer). Weights are
random-init (throughput does not depend on them) with the codebook drawn around quantizer inputs of
other photographs, as the port's tests do, so the printed code agreement is a meaningful sanity
check. The reference is saved in the released two-file layout and converted by the CLI's
`convert.main`. Rounds interleave the sides (benchmarks/protocol.py): best and median per side,
ratios of both. `--config official` is the released sizes (~1.1B parameters): peak RSS ~10 GB,
printed at the end; the reduced config is the tests' 56 px model (seconds). `--threads=1` pins
both sides to one core: on a loaded box PyTorch's two spinning OpenMP threads slow its small ops
by up to ~80x (the reduced model: 0.7 s per batch at load 5 with 2 threads, 8 ms with 1).
"""

import argparse
import gc
import os
import resource
import sys
import tempfile
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests", "tokenizers_port"))  # the vendored reference

from benchmarks import protocol  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from seed_reference import build as ref  # noqa: E402
from tokenizers_port.seed import convert, load  # noqa: E402
from tokenizers_port.vqgan.reference import photographs  # noqa: E402

CONFIGS = {"reduced": ref.SMALL, "official": ref.OFFICIAL}
# The converter's defaults are the released head counts and depth; the reduced model needs its own
# (the same flags as tests/tokenizers_port/test_seed_convert.py).
CONVERT_FLAGS = {"reduced": ["--vit-depth", "3", "--vit-heads", "4", "--qformer-heads", "4"],
                 "official": []}
CALIBRATION_IMAGES = 4  # as test_seed_official.py: 128 quantizer inputs to draw the codebook around


def _rss_gb() -> float:
  """Peak resident set size of this process so far (Linux reports kB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # GiB


def _reload_reference(sizes, seed: int, seed_ckpt: str, vit_ckpt: str):
  """The reference rebuilt with the saved (calibrated) weights, read through mmap so the files'
  pages, not a second copy, back the load. Rebuilding instead of keeping the first model keeps it
  out of memory while the converter and the Flax load hold their own copies."""
  model = ref.build(sizes, seed=seed)
  sd = torch.load(seed_ckpt, mmap=True, weights_only=True)
  vit = torch.load(vit_ckpt, mmap=True, weights_only=True)
  ours = set(model.state_dict())
  sd.update({f"visual_encoder.{k}": v for k, v in vit.items() if f"visual_encoder.{k}" in ours})
  model.load_state_dict(sd, strict=True)  # every tensor from the files, none left random
  del sd, vit
  return model.eval()


def build_pair(config: str, tmp: str, seed: int = 3):
  """(reference torch model, our loaded tokenizer) with the same weights, built in `tmp`."""
  sizes = CONFIGS[config]
  t = time.perf_counter()
  photos = photographs(sizes.img_size)
  model = ref.build(sizes, seed=seed)
  ref.calibrate_codebook(model, ref.normalize(photos[1::2][:CALIBRATION_IMAGES]))
  seed_ckpt, vit_ckpt = os.path.join(tmp, "seed_quantizer.pt"), os.path.join(tmp, "eva_vit_g.pth")
  ref.save_released_layout(model, seed_ckpt, vit_ckpt)
  n_params = sum(p.numel() for p in model.parameters())
  del model
  gc.collect()
  print(f"reference built, calibrated, saved: {n_params / 1e6:,.1f} M parameters, "
        f"{time.perf_counter() - t:.1f} s", flush=True)
  t = time.perf_counter()
  out = os.path.join(tmp, "flax")
  convert.main(["--torch-checkpoint", seed_ckpt, "--vit-checkpoint", vit_ckpt, "--out", out]
               + CONVERT_FLAGS[config])
  gc.collect()
  tok = load(out)
  gc.collect()
  print(f"converted and loaded: {time.perf_counter() - t:.1f} s, peak RSS so far {_rss_gb():.1f} GiB",
        flush=True)
  t = time.perf_counter()
  model = _reload_reference(sizes, seed, seed_ckpt, vit_ckpt)
  gc.collect()
  print(f"reference reloaded from the saved files: {time.perf_counter() - t:.1f} s", flush=True)
  return model, tok, n_params


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--config", default="reduced", choices=sorted(CONFIGS),
                 help="official: the released sizes (~1.1B parameters, ~10 GB); reduced: the tests' model")
  p.add_argument("--batch", type=int, default=2)
  p.add_argument("--rounds", "--repeats", type=int, default=3, dest="rounds")
  p.add_argument("--precision", default="default", choices=("default", "high", "highest"),
                 help="jax matmul precision of the Flax side (the port's agreement tests use "
                      "highest; the timing default is jax's default)")
  p.add_argument("--threads", type=int, default=0,
                 help="run both sides on this many cores (0: all the process may use)")
  a = p.parse_args(argv)
  if a.threads:  # before jax's backend starts (it sizes its pool by the affinity) and torch's pool
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:a.threads])
    torch.set_num_threads(a.threads)
  run = protocol.start("SEED-Tokenizer-2 encode: Flax port vs PyTorch reference")

  sizes = CONFIGS[a.config]
  with tempfile.TemporaryDirectory() as tmp:
    model, tok, n_params = build_pair(a.config, tmp)
  # Timed images: the even photographs (the codebook was drawn around odd ones), tiled if too few.
  images = photographs(sizes.img_size)[0::2][:a.batch]
  if len(images) < a.batch:
    images = np.resize(images, (a.batch,) + images.shape[1:])
  mean = torch.tensor(ref.MEAN).view(1, 3, 1, 1)
  std = torch.tensor(ref.STD).view(1, 3, 1, 1)

  def torch_encode():
    # The same path as ours: uint8 NHWC -> ToTensor + Normalize -> codes.
    with torch.inference_mode():
      x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255.0)
      return model.get_codebook_indices((x - mean) / std)[0]

  def flax_encode():
    if a.precision == "default":
      return tok.encode(images)
    with jax.default_matmul_precision(a.precision):
      return tok.encode(images)

  t = time.perf_counter()
  got = np.asarray(jax.block_until_ready(flax_encode()))
  print(f"flax compile + first call: {time.perf_counter() - t:.1f} s")
  t = time.perf_counter()
  want = torch_encode().numpy()
  print(f"torch first call: {time.perf_counter() - t:.1f} s")
  agreement = float((got == want).mean())
  print(f"SEED encode, {a.config} config ({n_params / 1e6:,.1f} M parameters), batch {a.batch} x "
        f"{sizes.img_size}px, float32; flax matmul precision: {a.precision} "
        f"(jax_default_matmul_precision={jax.config.jax_default_matmul_precision}); torch threads "
        f"{torch.get_num_threads()}; code agreement on the timed images: {agreement:.2%} "
        f"({int((got != want).sum())} of {got.size} codes differ)", flush=True)

  sides = {"torch": torch_encode, "flax": flax_encode}
  times = run.interleaved(sides, a.rounds, warmup=False)  # both warmed up above
  stats = run.compare(times, baseline="torch", work={k: float(a.batch) for k in sides}, unit="images")
  cpu = {k: min(v) for k, v in run.cpu_seconds.items()}
  print("process CPU seconds per call (best): " + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items()))
  contended = run.finish()
  print(f"peak RSS: {_rss_gb():.2f} GiB")
  return {"agreement": agreement, "stats": stats, "contended": contended}


if __name__ == "__main__":
  main()
