"""UniCode²'s cascade: image-code ids embedded from a FROZEN codebook through a TRAINABLE map.

Each image patch's id is its nearest k-means centroid c_k [code_dim] (SigLIP patch embeddings, the
codebook in config.model.image_codebook). config.model.image_embedding says how id image_base + k
becomes a model-width vector E_eff[k]:

    "table"    a row of the ordinary embedding table, as MIO (nothing here is used)
    "frozen"   E_eff[k] = n(c_k) @ P              one trainable linear map P [code_dim, embed]
    "cascade"  E_eff[k] = gelu(n(c_k) @ W1) @ W2 + R[k]
               a trainable projector MLP (hidden width image_projector_dim, 0: embed_dim) plus a
               trainable residual table R [codes, embed] that starts at zero

n(c) = c / rms(c): the centroids' scale (whatever SigLIP's layer norm left) does not set the
projector's. config.model.image_head "tied" makes the image ids' output logits h . E_eff[k] (the
same cascade, so nothing codes x embed is trained twice); "separate" keeps the LM head's columns.
Text and speech ids always use the ordinary table (which then holds no image rows).

Parameters, under `visual/` in the params tree (so checkpoints, sharding, restore and export see them):
    frozen_codebook [codes_pad, code_dim] float32  the file's centroids, then zero rows; never
                                                   differentiated (stop_gradient) nor in the
                                                   optimizer (split_frozen: no moments, no decay)
    proj [code_dim, embed]                          "frozen"
    proj_in [code_dim, hidden], proj_out [hidden, embed], residual [codes_pad, embed]   "cascade"
The two tables are split over fsdp on their width ("code_dim", "embed"), not their rows
(mio_jax/parallel/rules.py): a token's row is then gathered on every chip from its own slice of the
width and one all-to-all brings each chip its tokens' whole rows. Split on rows, XLA all-gathers the
whole batch's ids and every chip gathers every token (MIO-7B's batch: 1.4M tokens x 4096 floats,
23 GB per chip, for the residual's gradient alone). codes_pad rounds the codes up to a multiple of
1024, so the tied head's pass over the whole codebook can split its rows over fsdp ("act_codebook";
500,000 is not divisible by 64). The padded rows are never looked up.

Cost per step at MIO-7B's width (K = 500,000 codes, code_dim 1152, hidden = embed = 4096, fsdp F):
  input   each chip gathers [its tokens, 1152 / F] + [its tokens, 4096 / F] locally, after an
          all-gather of the batch's int32 ids, and one all-to-all of its tokens' rows; the projector
          costs 2 x (1152 x 4096 + 4096 x 4096) = 43 MFLOP per token forward (0.1% of the model's)
  tied    the head needs E_eff for all K codes: the projector over the whole codebook, rows split
          over fsdp, 21.5 TFLOP forward (x3 with the backward) per step over the mesh, plus
          all-to-alls of K x 1152 / F and K x 4096 / F floats per chip; E_eff is spliced into the
          head's kernel, so the logits (plain or chunked loss, scoring, decoding) are one matmul as
          with a table. Decoding computes that kernel once at prefill (the cache's "head").
  memory  frozen codebook K x 1152 x 4 B = 2.3 GB, once, no gradient, no Adam moments; residual
          K x 4096 x 4 B = 8.2 GB plus 16.4 GB of Adam moments; all split over fsdp
          (docs/unicode2.md).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mio_jax.config.keys import ConfigError
from mio_jax.model import codebook_file
from mio_jax.model.layers import fan_in_init, param
from mio_jax.model.vocab_padding import padded_vocab_size
from mio_jax.parallel.rules import constrain

IMAGE_EMBEDDINGS = ("table", "frozen", "cascade")
IMAGE_HEADS = ("separate", "tied")
FROZEN = "frozen_codebook"  # the parameter name the optimizer and gradients leave out
CODEBOOK_MULTIPLE = 1024  # codebook rows are padded to this: any power-of-two fsdp axis up to 1024


def codebook_rows(codes: int) -> int:
  return padded_vocab_size(codes, CODEBOOK_MULTIPLE)


def rms_normalise(x: jax.Array) -> jax.Array:
  x = x.astype(jnp.float32)
  return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + 1e-6)


# The trainable map's parameters per mode (the residual is added apart).
MAPS = {"frozen": ("proj",), "cascade": ("proj_in", "proj_out")}


def project(mode: str, dtype, maps: dict, centroids: jax.Array,
            hidden_axes: tuple | None = None) -> jax.Array:
  """The map without the residual, float32 [..., embed], for centroids [..., code_dim]; `maps`
  holds MAPS[mode]'s arrays. Matmuls in `dtype` (the model's compute dtype), accumulated in float32."""
  dt = jnp.dtype(dtype)
  x = rms_normalise(jax.lax.stop_gradient(centroids)).astype(dt)
  if mode == "frozen":
    return jnp.einsum("...d,de->...e", x, maps["proj"].astype(dt), preferred_element_type=jnp.float32)
  h = jnp.einsum("...d,dh->...h", x, maps["proj_in"].astype(dt))
  h = jax.nn.gelu(constrain(h, hidden_axes) if hidden_axes else h)
  return jnp.einsum("...h,he->...e", h, maps["proj_out"].astype(dt), preferred_element_type=jnp.float32)


def _zeros(key, shape, dtype):
  del key
  return jnp.zeros(shape, dtype)


class VisualCodebook(nnx.Module):
  """The frozen codebook and its trainable map (module docstring); `cfg` is a ModelConfig."""

  def __init__(self, cfg, *, rngs: nnx.Rngs):
    self.mode, self.dtype = cfg.image_embedding, jnp.dtype(cfg.dtype)
    rows, d, e = codebook_rows(cfg.image_codes), cfg.image_code_dim, cfg.embed_dim
    pd = jnp.dtype(cfg.param_dtype)
    # Zeros here; the centroids are read from the file after init (load_codebook) or restored.
    self.frozen_codebook = param(rngs, _zeros, (rows, d), ("codebook", "code_dim"), jnp.float32)
    if self.mode == "frozen":
      self.proj = param(rngs, fan_in_init(d), (d, e), ("code_dim", "embed"), pd)
    else:
      hidden = cfg.image_projector_dim or e
      self.proj_in = param(rngs, fan_in_init(d), (d, hidden), ("code_dim", "mlp"), pd)
      self.proj_out = param(rngs, fan_in_init(hidden), (hidden, e), ("mlp", "embed"), pd)
      self.residual = param(rngs, _zeros, (rows, e), ("codebook", "embed"), pd)

  def _arrays(self) -> dict:
    names = (FROZEN,) + MAPS[self.mode] + (("residual",) if self.mode == "cascade" else ())
    return {name: getattr(self, name)[...] for name in names}

  def embed(self, codes: jax.Array) -> jax.Array:
    """E_eff[codes] [batch, length, embed] in the compute dtype; codes in [0, codes)."""
    a = self._arrays()
    # Only the rows the batch needs, each chip from its slice of the width (module docstring).
    centroids = constrain(jnp.take(a[FROZEN], codes, axis=0), ("batch", "length", None))
    x = project(self.mode, self.dtype, a, centroids, ("batch", "length", "act_mlp"))
    if self.mode == "cascade":
      x = x + constrain(jnp.take(a["residual"], codes, axis=0), ("batch", "length", "act_embed"))
    return x.astype(self.dtype)

  def table(self, codes: int, hidden: jax.Array | None = None) -> tuple[jax.Array, jax.Array | None]:
    """E_eff for every code, float32 [codes, embed] (the tied head's columns), and `hidden`.

    With `hidden` (the states the head scores), the parameters pass an optimization barrier with
    it: this pass over the codebook runs after the layer stack, and its backward before the
    stack's. Left free to overlap, XLA CPU ran their collectives in different orders on different
    host devices and deadlocked (8 devices on 2 cores); an accelerator loses little by the order.
    """
    a = self._arrays()
    if hidden is not None:
      hidden, a = jax.lax.optimization_barrier((hidden, a))
    codebook = constrain(a[FROZEN], ("act_codebook", None))
    x = project(self.mode, self.dtype, a, codebook, ("act_codebook", "act_mlp"))
    x = constrain(x, ("act_codebook", "act_embed"))
    if self.mode == "cascade":
      x = x + a["residual"]
    return x[:codes], hidden


# ---- the frozen codebook outside the optimizer

def split_frozen(params: dict) -> tuple[dict, dict]:
  """(trainable, frozen) parameter trees: `frozen` holds the FROZEN leaves, `trainable` the rest.
  Without frozen leaves `trainable` has params' exact structure (a table-mode model's optimizer
  state is what it always was)."""
  trainable, frozen = {}, {}
  for key, value in params.items():
    if isinstance(value, dict):
      trainable[key], inner = split_frozen(value)
      if inner:
        frozen[key] = inner
    elif key == FROZEN:
      frozen[key] = value
    else:
      trainable[key] = value
  return trainable, frozen


def merge_frozen(trainable: dict, frozen: dict) -> dict:
  """The whole parameter tree again (split_frozen's inverse)."""
  out = dict(trainable)
  for key, value in frozen.items():
    out[key] = merge_frozen(out.get(key, {}), value) if isinstance(value, dict) else value
  return out


# ---- the centroids from config.model.image_codebook

def _padded_rows(path: str, codes: int, code_dim: int, index: tuple) -> np.ndarray:
  """Rows `index` of the padded codebook [codebook_rows(codes), code_dim]: the file's rows, then zeros."""
  rows, cols = index if len(index) == 2 else (index[0], slice(None))
  start, stop, _ = rows.indices(codebook_rows(codes))
  out = np.zeros((stop - start, code_dim), np.float32)
  if start < min(stop, codes):
    out[:min(stop, codes) - start] = codebook_file.read_rows(path, start, min(stop, codes))
  return out[:, cols]


def load_codebook(cfg, sharding: jax.sharding.Sharding | None = None) -> jax.Array:
  """The padded frozen codebook from cfg.image_codebook; with `sharding`, each process reads only
  the rows its devices hold (validate checked the file: mio_jax/train/validate.py)."""
  shape = (codebook_rows(cfg.image_codes), cfg.image_code_dim)
  read = lambda index: _padded_rows(cfg.image_codebook, cfg.image_codes, cfg.image_code_dim, index)
  if sharding is None:
    return jnp.asarray(read((slice(None), slice(None))))
  return jax.make_array_from_callback(shape, sharding, read)


def with_codebook(params: dict, cfg, sharding: jax.sharding.Sharding | None = None) -> dict:
  """`params` with visual/frozen_codebook read from cfg.image_codebook (a table model: unchanged)."""
  if cfg.image_embedding == "table":
    return params
  visual = dict(params["visual"], **{FROZEN: load_codebook(cfg, sharding)})
  return {**params, "visual": visual}


def check_image_settings(cfg, image_codes: int) -> None:
  """The image settings of config.model (or a ModelConfig) taken alone: a ConfigError naming the key
  for the first that cannot build a model. `image_codes`: the vocabulary's image ids. The centroids
  file is checked apart (check_codebook_file), where the config is validated, not at each build."""
  if cfg.image_embedding not in IMAGE_EMBEDDINGS:
    raise ConfigError(f"config.model.image_embedding={cfg.image_embedding!r} is not one of "
                      f"{', '.join(IMAGE_EMBEDDINGS)}")
  if cfg.image_head not in IMAGE_HEADS:
    raise ConfigError(f"config.model.image_head={cfg.image_head!r} is not one of {', '.join(IMAGE_HEADS)}")
  if cfg.image_projector_dim < 0:
    raise ConfigError(f"config.model.image_projector_dim={cfg.image_projector_dim} must be 0 (embed_dim) "
                      "or a width")
  if (cfg.image_embedding != "table" or cfg.image_head == "tied") and image_codes < 1:
    raise ConfigError(f"config.model.image_embedding={cfg.image_embedding!r} with image_head="
                      f"{cfg.image_head!r} needs the vocabulary's image ids, but it has none "
                      f"(config.vocab.image_codes={image_codes})")
  if cfg.image_embedding != "table" and cfg.image_code_dim < 1:
    raise ConfigError(f"config.model.image_code_dim={cfg.image_code_dim} must be the centroids' width")


def check_codebook_file(cfg, image_codes: int) -> str | None:
  """Why cfg.image_codebook cannot serve a model of `image_codes` codes (one line naming the key and
  the file), or None; reads the file's header only."""
  path = cfg.image_codebook
  key = f"config.model.image_codebook={path!r}"
  if not path:
    return (f"config.model.image_codebook is empty: image_embedding={cfg.image_embedding!r} needs the "
            "frozen centroids (.npy or .safetensors, float32 [image_codes, image_code_dim])")
  from mio_jax import storage
  if not storage.as_path(path).exists():
    return f"{key} does not exist"
  try:
    shape, dtype, _ = codebook_file.read_header(path)
    codebook_file.check_codebook(shape, dtype)
  except (codebook_file.CodebookFileError, OSError) as e:
    return f"{key} {e}"
  if shape[0] != image_codes:
    return f"{key} holds {shape[0]} centroids but config.vocab.image_codes={image_codes}"
  if shape[1] != cfg.image_code_dim:
    return f"config.model.image_code_dim={cfg.image_code_dim} but {key} holds {shape[1]}-dim centroids"
  return None


# ---- export: the effective rows as plain tables

def effective_image_rows(read, cfg, block: int = 8192) -> np.ndarray:
  """E_eff for every image code, float32 [image_codes, embed], from saved parameters (`read(name)`
  gives visual/NAME, or embed/table, as a host array). Computed `block` codes at a time, so the host
  holds the result plus one block's activations (at K = 500,000 and embed 4096: 8.2 GB)."""
  base, codes = cfg.image_base, cfg.image_codes
  if cfg.image_embedding == "table":
    return np.asarray(read("embed/table")[base:base + codes], np.float32)
  maps = {name: jnp.asarray(read(f"visual/{name}")) for name in MAPS[cfg.image_embedding]}
  codebook = read(f"visual/{FROZEN}")
  residual = read("visual/residual") if cfg.image_embedding == "cascade" else None
  run = jax.jit(lambda c, m: project(cfg.image_embedding, cfg.dtype, m, c))
  out = np.empty((codes, cfg.embed_dim), np.float32)
  for start in range(0, codes, block):
    stop = min(start + block, codes)
    out[start:stop] = np.asarray(run(jnp.asarray(codebook[start:stop]), maps))
    if residual is not None:
      out[start:stop] += residual[start:stop]
  return out
