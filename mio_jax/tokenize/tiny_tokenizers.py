"""Tiny tokenizer folders in the ported formats, for tests, benchmarks and the demo.

Real weights cannot be downloaded here; these keep each tokenizer's real code path (and its
interfaces: 8 RVQ layers of 1024 codes, hop 320; a VQGAN raster grid) with few channels, so the job
is exercised end to end at CPU speed. The random-weight ones are made on the fly: their codes mean
nothing, they are a deterministic function of the input, which is all the job's tests need. The
trained ones (`trained_tiny_*_dir`) are committed under data/tokenizers/: their codes carry colour
and what is said, which the demo's learning evidence needs.

  python -m mio_jax.tokenize.tiny_tokenizers OUT_DIR   -> OUT_DIR/speechtokenizer, OUT_DIR/vqgan
  (make_tiny_seed: a SEED-Tokenizer-2 folder, for `--config.image_tokenizer` tests;
   make_tiny_siglip: a SigLIP tower, the patch encoder of UniCode2 tokenizers, mio_jax/codebook)
"""

import os
import sys


def make_tiny_speechtokenizer(out_dir: str, seed: int = 0) -> str:
  from tokenizers_port.speechtokenizer.load import save_random_tiny

  # Same strides (hop 320), codebook (1024) and n_q (8) as the release; 4 base filters, 1 LSTM layer.
  return save_random_tiny(out_dir, seed, n_filters=4)


def make_tiny_vqgan(out_dir: str, seed: int = 0) -> str:
  from flax import nnx
  from tokenizers_port.vqgan import params_io
  from tokenizers_port.vqgan.model import VQGAN
  from tokenizers_port.vqgan.config import tiny_config

  # 256 px -> 16x16 grid like taming f16, 8192 codes like MIO's image block; 4 base channels.
  cfg = tiny_config(ch=4)
  model = VQGAN(cfg, rngs=nnx.Rngs(seed))  # the port's own random initialisation
  return params_io.save_model(model, cfg, out_dir)


def make_tiny_seed(out_dir: str, seed: int = 0) -> str:
  """A random-weight SEED-Tokenizer-2 folder in the converter's format: the released interface (32
  causal queries, 8192 x 32 codebook, CLIP squash resize) at 56 px with a few channels. The port
  initialises the codebook to zeros; here it is drawn around the quantizer's inputs on random
  images, so codes vary with the image and the query."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from flax import nnx
  from tokenizers_port import flax_params
  from tokenizers_port.seed.config import SeedConfig, save_config
  from tokenizers_port.seed.model import SeedTokenizerModel

  cfg = SeedConfig(image_size=56, vit_width=32, vit_depth=2, vit_heads=2, vit_mlp_dim=64,
                   qformer_hidden=32, qformer_layers=2, qformer_heads=2, qformer_intermediate=64,
                   cross_attention_layers=(0,), image_blocks=1, image_block_heads=2,
                   image_block_mlp_dim=64, unclip_dim=64)
  model = SeedTokenizerModel(cfg, rngs=nnx.Rngs(seed))
  rng = np.random.default_rng(seed)
  for _, param in nnx.iter_graph(model):  # zero-init query tokens and positions make every query alike
    if isinstance(param, nnx.Param) and np.ptp(np.asarray(param[...])) == 0:
      param[...] = param[...] + jnp.asarray(rng.normal(0, 0.5, param[...].shape), param[...].dtype)
  x = jax.random.normal(jax.random.key(seed), (4, cfg.image_size, cfg.image_size, 3))
  z = np.asarray(model.latents(x)).reshape(-1, cfg.code_dim)
  centres = z[rng.integers(0, len(z), cfg.n_embed)]
  model.codebook[...] = jnp.asarray(centres + rng.normal(0, 1, centres.shape) * z.std(axis=0),
                                    jnp.float32)
  os.makedirs(out_dir, exist_ok=True)
  flax_params.save_params(flax_params.model_params(model), out_dir)
  save_config(cfg, out_dir)
  return out_dir


def make_tiny_siglip(out_dir: str, seed: int = 0, **overrides) -> str:
  """A random-weight SigLIP vision tower in the converter's format: the port's "tiny" preset (62 px,
  patch 14: a 4 x 4 grid, width 64), with `overrides` of its SiglipConfig fields (e.g. image_size=224,
  patch_size=16: a 14 x 14 grid). The port initialises LayerNorms to (1, 0) and biases to 0; they get
  noise here so that every tensor matters."""
  import dataclasses

  import jax.numpy as jnp
  import numpy as np
  from flax import nnx
  from tokenizers_port import flax_params
  from tokenizers_port.siglip.config import PRESETS, save_config
  from tokenizers_port.siglip.model import SiglipVisionModel

  cfg = dataclasses.replace(PRESETS["tiny"], **overrides)
  model = SiglipVisionModel(cfg, rngs=nnx.Rngs(seed))
  rng = np.random.default_rng(seed)
  for _, param in nnx.iter_graph(model):
    if isinstance(param, nnx.Param) and param[...].ndim == 1:
      param[...] = param[...] + jnp.asarray(rng.normal(0, 0.2, param[...].shape), param[...].dtype)
  os.makedirs(out_dir, exist_ok=True)
  flax_params.save_params(flax_params.model_params(model), out_dir)
  save_config(cfg, out_dir)
  return out_dir


def _committed(name: str, module: str) -> str:
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  path = os.path.join(root, "data", "tokenizers", name)
  for f in ("config.json", "params.safetensors"):
    if not os.path.exists(os.path.join(path, f)):
      raise FileNotFoundError(f"{os.path.join(path, f)} is missing: rebuild it with "
                              f"`python -m {module} --out {path}`")
  return path


def trained_tiny_vqgan_dir() -> str:
  """The committed tiny VQGAN (ch=8) trained on the mini corpus images: codes follow colour and
  decode to blocky look-alikes. Made by `python -m tokenizers_port.vqgan.train_tiny`."""
  return _committed("tiny_vqgan", "tokenizers_port.vqgan.train_tiny")


def trained_tiny_speechtokenizer_dir() -> str:
  """The committed tiny SpeechTokenizer whose layer-1 codes follow what is said (encoder distilled
  from MFCCs on the mini corpus speech; decoder trained to a whisper-like envelope). Made by
  `python -m tokenizers_port.speechtokenizer.train_tiny`."""
  return _committed("tiny_speechtokenizer", "tokenizers_port.speechtokenizer.train_tiny")


def make_tiny_tokenizers(out_dir: str, seed: int = 0) -> tuple[str, str]:
  """-> (speech tokenizer dir, image tokenizer dir)."""
  return (make_tiny_speechtokenizer(os.path.join(out_dir, "speechtokenizer"), seed),
          make_tiny_vqgan(os.path.join(out_dir, "vqgan"), seed))


if __name__ == "__main__":
  print(make_tiny_tokenizers(sys.argv[1] if len(sys.argv) > 1 else "workdirs/tiny_tokenizers"))
