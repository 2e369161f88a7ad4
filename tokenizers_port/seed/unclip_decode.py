"""SEED-Tokenizer-2 codes -> pixels through Stable unCLIP (stable-diffusion-2-1-unclip), the way
MIO-7B shows its generated images. The diffusion model stays in PyTorch (diffusers, the `decode`
extra); only the code -> image-embedding path is ours (`SeedTokenizer.embed_codes`, flax).

    pipe = load_unclip_pipeline("stable-diffusion-2-1-unclip/", device="cuda")
    pixels = decode_codes(seed.load("seed/"), pipe, codes)     # int [B, 32] -> uint8 [B, H, W, 3]

    python -m tokenizers_port.seed.unclip_decode --seed seed/ --unclip stable-diffusion-2-1-unclip/ \
        --codes codes.npy --out images/

What MIO does (MIO-Team/MIO @ 6c0b5e6, image_tokenizer/models/seed_llama_tokenizer.py,
`ImageTokenizer.decode`): `StableUnCLIPImg2ImgPipeline.from_pretrained(diffusion_path)` (fp16 on
GPU), called with `image_embeds=get_codebook_entry(indices)`, guidance_scale 10, noise_level 0,
num_inference_steps 20, no prompt (the pipeline's empty prompt and its empty negative prompt) and
no negative image embedding (the pipeline's zeros). MIO vendors an older copy of the pipeline whose
addition, `negative_image_embeds`, that call leaves unused: the steps it runs are diffusers' own.
MIO passes one initial latent drawn once per process (`torch.randn`, no seed); here it is drawn
from `seed`, so a decode is reproducible. Nothing in training imports this module.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

# MIO's ImageTokenizer.decode defaults.
GUIDANCE_SCALE = 10.0
NOISE_LEVEL = 0
NUM_INFERENCE_STEPS = 20


def _unused_image_encoder(dtype):
  """A one-layer stand-in for the pipeline's CLIP ViT-H image encoder (~630M parameters): decoding
  from `image_embeds` never calls it; the pipeline only reads its parameters' dtype."""
  from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection
  cfg = CLIPVisionConfig(hidden_size=8, intermediate_size=8, projection_dim=8, num_hidden_layers=1,
                         num_attention_heads=1, image_size=2, patch_size=1)
  return CLIPVisionModelWithProjection(cfg).to(dtype)


def load_unclip_pipeline(path: str, device: str = "cpu", dtype=None, load_image_encoder: bool = False):
  """A local stable-diffusion-2-1-unclip folder (model_index.json + component folders) ->
  StableUnCLIPImg2ImgPipeline on `device`; never downloads. dtype: torch dtype [float16 on CUDA,
  as MIO runs it; float32 elsewhere]. The CLIP image encoder is not loaded unless asked for (its
  folder may then be absent): codes give the image embedding."""
  import torch
  from diffusers import StableUnCLIPImg2ImgPipeline
  if not os.path.isfile(os.path.join(path, "model_index.json")):
    raise ValueError(f"{path}: not a diffusers pipeline folder (no model_index.json); download "
                     "stabilityai/stable-diffusion-2-1-unclip there")
  if dtype is None:
    dtype = torch.float16 if str(device).startswith("cuda") else torch.float32
  extra = {} if load_image_encoder else {"image_encoder": _unused_image_encoder(dtype)}
  pipe = StableUnCLIPImg2ImgPipeline.from_pretrained(path, dtype=dtype, local_files_only=True,
                                                     **extra)
  pipe.set_progress_bar_config(disable=True)
  return pipe.to(device)


def _checked_codes(seed_tokenizer, codes) -> np.ndarray:
  codes = np.asarray(codes)
  n, size = seed_tokenizer.codes_per_image, seed_tokenizer.codebook_size
  if codes.ndim != 2 or codes.shape[1] != n or not len(codes) or not np.issubdtype(codes.dtype, np.integer):
    raise ValueError(f"decode_codes: expected integer codes [B, {n}] with B > 0, got {codes.dtype} "
                     f"{list(codes.shape)}")
  if codes.min() < 0 or codes.max() >= size:
    raise ValueError(f"decode_codes: codes must lie in [0, {size}), got [{codes.min()}, {codes.max()}]")
  return codes.astype(np.int32)


def decode_codes(seed_tokenizer, pipeline, codes, *, guidance_scale: float = GUIDANCE_SCALE,
                 noise_level: int = NOISE_LEVEL, num_inference_steps: int = NUM_INFERENCE_STEPS,
                 seed: int = 0) -> np.ndarray:
  """SEED codes int [B, 32] -> uint8 RGB [B, H, W, 3] (768 px for stable-diffusion-2-1-unclip):
  `embed_codes` (flax) conditions the pipeline through `image_embeds=`, with MIO's settings by
  default. The initial latents and the embedding noise come from a CPU generator seeded by `seed`,
  so a batch gives the same pixels on any device up to the device's arithmetic."""
  import torch
  codes = _checked_codes(seed_tokenizer, codes)
  dim = pipeline.image_normalizer.mean.shape[-1]
  embeds = np.array(seed_tokenizer.embed_codes(codes), np.float32)  # a writable copy for torch
  if embeds.shape[1] != dim:
    raise ValueError(f"decode_codes: the SEED tokenizer embeds to {embeds.shape[1]} but the unCLIP "
                     f"pipeline expects {dim}-dim image embeddings")
  embeds = torch.from_numpy(embeds).to(device=pipeline.device, dtype=pipeline.unet.dtype)
  generator = torch.Generator(device="cpu").manual_seed(seed)
  # One empty prompt per image: the pipeline's batch size is the prompt's (MIO decodes one at a time).
  out = pipeline(prompt=[""] * len(codes), image_embeds=embeds, guidance_scale=guidance_scale,
                 noise_level=noise_level, num_inference_steps=num_inference_steps, generator=generator,
                 output_type="np")
  # The rounding diffusers' own PIL output does (VaeImageProcessor.numpy_to_pil).
  return (out.images * 255).round().astype(np.uint8)


def main(argv: list[str] | None = None) -> list[str]:
  p = argparse.ArgumentParser(prog="python -m tokenizers_port.seed.unclip_decode",
                              description="SEED-2 image codes (.npy, int [B, 32] or [32]) -> PNGs "
                              "through stable-diffusion-2-1-unclip, with MIO's settings by default.")
  p.add_argument("--seed", required=True, help="a `python -m tokenizers_port.convert seed` folder")
  p.add_argument("--unclip", required=True, help="a local stable-diffusion-2-1-unclip folder")
  p.add_argument("--codes", required=True, help=".npy of integer codes [B, 32] (or one image: [32])")
  p.add_argument("--out", required=True, help="folder for image_000.png, ...")
  p.add_argument("--device", default="cpu", help="torch device of the pipeline [cpu]")
  p.add_argument("--fp16", action="store_true", help="float16 pipeline (the default on CUDA)")
  p.add_argument("--guidance_scale", type=float, default=GUIDANCE_SCALE)
  p.add_argument("--noise_level", type=int, default=NOISE_LEVEL)
  p.add_argument("--steps", type=int, default=NUM_INFERENCE_STEPS)
  p.add_argument("--rng_seed", type=int, default=0, help="seed of the initial latents [0]")
  p.add_argument("--batch", type=int, default=4, help="images per pipeline call [4]")
  args = p.parse_args(argv)
  from PIL import Image
  from tokenizers_port import seed as seed_port
  codes = np.load(args.codes)
  codes = codes[None] if codes.ndim == 1 else codes
  tok = seed_port.load(args.seed)
  _checked_codes(tok, codes)  # before the minutes-long pipeline load
  dtype = None
  if args.fp16:
    import torch
    dtype = torch.float16
  pipe = load_unclip_pipeline(args.unclip, device=args.device, dtype=dtype)
  os.makedirs(args.out, exist_ok=True)
  paths = []
  for start in range(0, len(codes), args.batch):
    pixels = decode_codes(tok, pipe, codes[start:start + args.batch], guidance_scale=args.guidance_scale,
                          noise_level=args.noise_level, num_inference_steps=args.steps,
                          seed=args.rng_seed + start)
    for i, image in enumerate(pixels):
      paths.append(os.path.join(args.out, f"image_{start + i:03d}.png"))
      Image.fromarray(image).save(paths[-1])
      print(paths[-1])
  return paths


if __name__ == "__main__":
  main()
