"""Parameter names: our flax paths <-> Blip2QformerQuantizer `state_dict` keys (MIO's seed_qformer).

The ViT, ln_vision and the code -> embedding modules keep the reference's attribute names, so
only the leaf changes; the Q-Former, the two task MLPs and the codebook are renamed by the
rules below. The released ViT weights (eva_vit_g.pth) are the same keys without the
`visual_encoder.` prefix.
"""

import re

import numpy as np

# (our dotted module path pattern, torch pattern), applied in order, first match wins.
_RULES = [
    (r"^qformer\.query_tokens$", "query_tokens"),
    (r"^qformer\.embed_norm$", "Qformer.bert.embeddings.LayerNorm"),
    (r"^qformer\.layers\.(\d+)\.self_attn\.(query|key|value)$",
     r"Qformer.bert.encoder.layer.\1.attention.self.\2"),
    (r"^qformer\.layers\.(\d+)\.self_attn\.dense$",
     r"Qformer.bert.encoder.layer.\1.attention.output.dense"),
    (r"^qformer\.layers\.(\d+)\.self_attn\.norm$",
     r"Qformer.bert.encoder.layer.\1.attention.output.LayerNorm"),
    (r"^qformer\.layers\.(\d+)\.cross_attn\.(query|key|value)$",
     r"Qformer.bert.encoder.layer.\1.crossattention.self.\2"),
    (r"^qformer\.layers\.(\d+)\.cross_attn\.dense$",
     r"Qformer.bert.encoder.layer.\1.crossattention.output.dense"),
    (r"^qformer\.layers\.(\d+)\.cross_attn\.norm$",
     r"Qformer.bert.encoder.layer.\1.crossattention.output.LayerNorm"),
    (r"^qformer\.layers\.(\d+)\.ffn\.fc1$",
     r"Qformer.bert.encoder.layer.\1.intermediate_query.dense"),
    (r"^qformer\.layers\.(\d+)\.ffn\.fc2$", r"Qformer.bert.encoder.layer.\1.output_query.dense"),
    (r"^qformer\.layers\.(\d+)\.ffn\.norm$",
     r"Qformer.bert.encoder.layer.\1.output_query.LayerNorm"),
    (r"^(?:image_embedding\.)?(encode_task_layer|decode_task_layer)\.fc1$", r"\1.0"),
    (r"^(?:image_embedding\.)?(encode_task_layer|decode_task_layer)\.fc2$", r"\1.2"),
    (r"^codebook$", "quantize.embedding"),
    (r"^image_embedding\.blocks_image\.(\d+)\.(qkv|proj)$", r"blocks_image.\1.attn.\2"),
    (r"^image_embedding\.image_down\.(\d+)$", lambda m: f"image_down.{2 * int(m.group(1))}"),
    (r"^image_embedding\.", ""),
]
_LEAF = {"kernel": "weight", "scale": "weight", "bias": "bias"}
# Leaves that are bare nn.Parameters in torch (same name, same layout).
_BARE = ("cls_token", "pos_embed", "q_bias", "v_bias", "query_tokens", "pos_embed_image")

# Keys of the released files that the reference builds but never uses for encoding or for
# get_codebook_entry, or drops itself (Qformer.cls / word and position embeddings / the text FFN
# `intermediate` and `output` are set to None; `blocks`/`pos_embed` are the unused recon_s branch;
# eva_vit_g.pth's layers past the 39 BLIP-2 keeps and its final norm / head are skipped by its
# strict=False load).
_IGNORED = [
    r"^Qformer\.cls\.", r"^Qformer\.bert\.embeddings\.(word_embeddings|position_embeddings)\.",
    r"^Qformer\.bert\.embeddings\.position_ids$",
    r"^Qformer\.bert\.encoder\.layer\.\d+\.(intermediate|output)\.",
    r"^blocks\.\d+\.", r"^pos_embed$",
    r"^visual_encoder\.(norm|fc_norm|head)\.",
]


def torch_key(path: tuple) -> str:
  """Flax parameter path, e.g. ('qformer', 'layers', 0, 'ffn', 'fc1', 'kernel') -> torch key."""
  *mods, leaf = [str(p) for p in path]
  if leaf in _BARE:
    mods, leaf_name = mods + [leaf], None
  elif path == ("codebook",):
    mods, leaf_name = ["codebook"], "weight"
  else:
    leaf_name = _LEAF[leaf]
  name = ".".join(mods)
  for pat, rep in _RULES:
    new, n = re.subn(pat, rep, name)
    if n:
      name = new
      break
  if leaf_name is None:
    return name
  return f"{name}.{leaf_name}" if name else leaf_name


def is_ignored(key: str, vit_depth: int) -> bool:
  m = re.match(r"^visual_encoder\.blocks\.(\d+)\.", key)
  if m and int(m.group(1)) >= vit_depth:
    return True
  return any(re.match(p, key) for p in _IGNORED)


def torch_to_flax(path: tuple, w: np.ndarray) -> np.ndarray:
  """Linear weights [out, in] -> kernels [in, out]; conv OIHW -> HWIO; the rest unchanged."""
  if path[-1] == "kernel":
    return np.ascontiguousarray(w.T if w.ndim == 2 else w.transpose(2, 3, 1, 0))
  return w


def torch_shape(path: tuple, flax_shape: tuple) -> tuple:
  if path[-1] == "kernel":
    return tuple(reversed(flax_shape)) if len(flax_shape) == 2 else (
        flax_shape[3], flax_shape[2], flax_shape[0], flax_shape[1])
  return tuple(flax_shape)
