"""Our parameter names <-> Hugging Face Llama names, as data, used by export and import alike.

Each row names one of our parameters (a path in the pure-dict param tree), its Hugging Face name
(with `{layer}` for tensors our scanned stack keeps on a leading layers axis) and a transform.
Transforms act on one layer's tensor:

    same       identical layout (embedding table [vocab, embed], RMSNorm scales)
    linear     ours [in, out]           <-> HF nn.Linear weight [out, in]
    heads_in   ours [embed, heads, dim] <-> HF [heads * dim, embed]   (q, k, v projections)
    heads_out  ours [heads, dim, embed] <-> HF [embed, heads * dim]   (o projection)

No q/k permutation: our rotary embedding uses HF's rotate_half convention (mio_jax/model/layers.py).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterator

import numpy as np

from mio_jax.model.transformer import ModelConfig
from mio_jax.model.visual_cascade import FROZEN, codebook_rows


@dataclasses.dataclass(frozen=True)
class Transform:
  to_hf: Callable[[np.ndarray], np.ndarray]
  # HF tensor and the shape of our (single-layer) tensor -> our tensor.
  from_hf: Callable[[np.ndarray, tuple], np.ndarray]


TRANSFORMS = {
    "same": Transform(lambda x: x, lambda y, shape: y),
    "linear": Transform(lambda x: x.T, lambda y, shape: y.T),
    "heads_in": Transform(lambda x: x.reshape(x.shape[0], -1).T, lambda y, shape: y.T.reshape(shape)),
    "heads_out": Transform(lambda x: x.reshape(-1, x.shape[-1]).T, lambda y, shape: y.T.reshape(shape)),
}


@dataclasses.dataclass(frozen=True)
class TensorMap:
  ours: str  # "/"-joined path in the param dict
  hf: str  # HF state-dict name; "{layer}" marks a per-layer tensor (ours is stacked on axis 0)
  transform: str  # a key of TRANSFORMS

  @property
  def per_layer(self) -> bool:
    return "{layer}" in self.hf


_LAYER = "model.layers.{layer}."
PARAM_MAP: tuple[TensorMap, ...] = (
    TensorMap("embed/table", "model.embed_tokens.weight", "same"),
    TensorMap("blocks/attn_norm/scale", _LAYER + "input_layernorm.weight", "same"),
    TensorMap("blocks/attn/wq", _LAYER + "self_attn.q_proj.weight", "heads_in"),
    TensorMap("blocks/attn/wk", _LAYER + "self_attn.k_proj.weight", "heads_in"),
    TensorMap("blocks/attn/wv", _LAYER + "self_attn.v_proj.weight", "heads_in"),
    TensorMap("blocks/attn/wo", _LAYER + "self_attn.o_proj.weight", "heads_out"),
    TensorMap("blocks/mlp_norm/scale", _LAYER + "post_attention_layernorm.weight", "same"),
    TensorMap("blocks/mlp/gate", _LAYER + "mlp.gate_proj.weight", "linear"),
    TensorMap("blocks/mlp/up", _LAYER + "mlp.up_proj.weight", "linear"),
    TensorMap("blocks/mlp/down", _LAYER + "mlp.down_proj.weight", "linear"),
    TensorMap("final_norm/scale", "model.norm.weight", "same"),
    TensorMap("lm_head", "lm_head.weight", "linear"),
)


# Where our vocabulary-sized tensors keep the vocab: export strips the hardware padding of these
# (ids past cfg.used_vocab_size), import restores it as zeros.
VOCAB_AXIS = {"embed/table": 0, "lm_head": 1}


def strip_vocab_padding(name: str, value: np.ndarray, cfg: ModelConfig) -> np.ndarray:
  if name not in VOCAB_AXIS or cfg.used_vocab_size == value.shape[VOCAB_AXIS[name]]:
    return value
  return np.take(value, np.arange(cfg.used_vocab_size), axis=VOCAB_AXIS[name])


def pad_vocab(name: str, value: np.ndarray, cfg: ModelConfig) -> np.ndarray:
  """`value` with zero rows for the padded ids, up to cfg.vocab_size."""
  if name not in VOCAB_AXIS or value.shape[VOCAB_AXIS[name]] == cfg.vocab_size:
    return value
  axis = VOCAB_AXIS[name]
  widths = [(0, 0)] * value.ndim
  widths[axis] = (0, cfg.vocab_size - value.shape[axis])
  return np.pad(value, widths)


def our_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
  """Every parameter's full shape (layers axis included), by "/"-joined path. With a visual
  codebook (mio_jax/model/visual_cascade.py) the table and head hold no rows / columns of the image
  ids that the cascade serves, and visual/* has no Hugging Face name: the export folds it in."""
  e, n, h, k, d, m = cfg.embed_dim, cfg.num_layers, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.mlp_dim
  shapes = {
      "embed/table": (cfg.embed_rows, e), "blocks/attn_norm/scale": (n, e), "blocks/attn/wq": (n, e, h, d),
      "blocks/attn/wk": (n, e, k, d), "blocks/attn/wv": (n, e, k, d), "blocks/attn/wo": (n, h, d, e),
      "blocks/mlp_norm/scale": (n, e), "blocks/mlp/gate": (n, e, m), "blocks/mlp/up": (n, e, m),
      "blocks/mlp/down": (n, m, e), "final_norm/scale": (e,), "lm_head": (e, cfg.head_columns),
  }
  if cfg.image_embedding != "table":
    rows, c, hidden = codebook_rows(cfg.image_codes), cfg.image_code_dim, cfg.image_projector_dim or e
    shapes[f"visual/{FROZEN}"] = (rows, c)
    if cfg.image_embedding == "frozen":
      shapes["visual/proj"] = (c, e)
    else:
      shapes.update({"visual/proj_in": (c, hidden), "visual/proj_out": (hidden, e),
                     "visual/residual": (rows, e)})
  return shapes


def hf_shape(entry: TensorMap, our_shape: tuple[int, ...]) -> tuple[int, ...]:
  """The HF tensor's shape for (one layer of) our parameter of shape `our_shape`."""
  layer_shape = our_shape[1:] if entry.per_layer else our_shape
  probe = np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), layer_shape, (0,) * len(layer_shape))
  return TRANSFORMS[entry.transform].to_hf(probe).shape


def hf_names(entry: TensorMap, num_layers: int) -> list[str]:
  return [entry.hf.format(layer=i) for i in range(num_layers)] if entry.per_layer else [entry.hf]


def exported_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
  """Every HF tensor's shape, in the order the export writes them, without the vocab padding."""
  shapes = our_shapes(cfg)
  out = {}
  for entry in PARAM_MAP:
    shape = list(shapes[entry.ours])
    if entry.ours in VOCAB_AXIS:
      shape[VOCAB_AXIS[entry.ours]] = cfg.used_vocab_size
    for name in hf_names(entry, cfg.num_layers):
      out[name] = hf_shape(entry, tuple(shape))
  return out


def to_hf_tensors(entry: TensorMap, value: np.ndarray) -> Iterator[tuple[str, np.ndarray]]:
  """(HF name, tensor) for our parameter `value` (one per layer for stacked parameters)."""
  fn = TRANSFORMS[entry.transform].to_hf
  if entry.per_layer:
    for i in range(value.shape[0]):
      yield entry.hf.format(layer=i), np.ascontiguousarray(fn(value[i]))
  else:
    yield entry.hf, np.ascontiguousarray(fn(value))


def from_hf_tensors(entry: TensorMap, read: Callable[[str], np.ndarray], our_shape: tuple[int, ...]) -> np.ndarray:
  """Our parameter from HF tensors; `read(name)` returns one HF tensor (or raises KeyError)."""
  fn = TRANSFORMS[entry.transform].from_hf
  if not entry.per_layer:
    return np.ascontiguousarray(fn(read(entry.hf), our_shape))
  out = None
  for i in range(our_shape[0]):
    layer = fn(read(entry.hf.format(layer=i)), our_shape[1:])
    if out is None:
      out = np.empty(our_shape, layer.dtype)
    out[i] = layer
  return out


def get_path(tree: dict, path: str):
  for key in path.split("/"):
    tree = tree[key]
  return tree


def set_path(tree: dict, path: str, value) -> None:
  keys = path.split("/")
  for key in keys[:-1]:
    tree = tree.setdefault(key, {})
  tree[keys[-1]] = value


# ---- model config <-> transformers LlamaConfig

def hf_config_dict(cfg: ModelConfig, *, max_position_embeddings: int, bos_token_id: int | None,
                   eos_token_id: int | list[int] | None, torch_dtype: str) -> dict:
  """LlamaConfig keyword arguments that build the same network as `cfg`."""
  return dict(
      vocab_size=cfg.used_vocab_size, hidden_size=cfg.embed_dim, intermediate_size=cfg.mlp_dim,
      num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
      num_key_value_heads=cfg.num_kv_heads, head_dim=cfg.head_dim, rms_norm_eps=cfg.norm_eps,
      rope_theta=float(cfg.rope_theta),  # transformers 5 stores it as rope_parameters.rope_theta
      hidden_act="silu", attention_bias=False, mlp_bias=False, tie_word_embeddings=False,
      max_position_embeddings=max_position_embeddings, bos_token_id=bos_token_id,
      eos_token_id=eos_token_id, dtype=torch_dtype, architectures=["LlamaForCausalLM"],
  )


def model_config_from_hf(hf: dict, where: str) -> dict:
  """ModelConfig fields from a HF Llama config.json dict; unsupported variants raise, naming the key."""
  def need(key, ok, what):
    if not ok(hf.get(key)):
      raise ValueError(f"{where}: {key}={hf.get(key)!r} is not supported ({what})")

  need("model_type", lambda v: v in (None, "llama"), "a Llama checkpoint is expected")
  need("hidden_act", lambda v: v in (None, "silu"), "SwiGLU with silu")
  need("attention_bias", lambda v: not v, "no attention bias")
  need("mlp_bias", lambda v: not v, "no MLP bias")
  rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
  rope_type = rope.get("rope_type", rope.get("type", "default"))
  if rope_type != "default":
    raise ValueError(f"{where}: rope type {rope_type!r} is not supported (plain RoPE only)")
  theta = rope.get("rope_theta", hf.get("rope_theta", 10_000.0))
  heads = hf["num_attention_heads"]
  return dict(
      vocab_size=hf["vocab_size"], embed_dim=hf["hidden_size"], num_layers=hf["num_hidden_layers"],
      num_heads=heads, num_kv_heads=hf.get("num_key_value_heads") or heads,
      head_dim=hf.get("head_dim") or hf["hidden_size"] // heads, mlp_dim=hf["intermediate_size"],
      norm_eps=float(hf.get("rms_norm_eps", 1e-6)), rope_theta=float(theta),
  )
