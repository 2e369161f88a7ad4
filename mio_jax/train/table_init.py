"""A `table` checkpoint as the start of a run whose image ids use the visual codebook.

MIO's layout (and every import, launch/import_hf.py) gives each image id a row of `embed/table` and
a column of `lm_head`. A run with config.model.image_embedding frozen or cascade has no table rows
for the image ids (E_eff comes from the codebook), and with image_head tied no head columns for
them (mio_jax/model/visual_cascade.py). Starting such a run from a table checkpoint of the same
vocabulary keeps everything the two share and drops what the codebook replaces:

  embed/table  [vocab, embed] -> [vocab - K, embed]   rows image_base .. image_base + K dropped
  lm_head      [embed, vocab] -> [embed, vocab - K]   columns dropped (image_head tied only)
  visual/*     not in the checkpoint                  the run's fresh init (the projector, a zero
                                                      residual, the centroids from their file)

The rest must match by name and shape, as for any init_from (mio_jax/train/checkpoint.py).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

VISUAL = "visual"


def applies(saved: dict[str, tuple[int, ...]], params: dict, model_cfg) -> bool:
  """Whether `saved` (name -> shape) is a table checkpoint and this run's params read image ids
  apart: then `restore` loads it, else the plain exact-match load."""
  return (model_cfg is not None and model_cfg.uses_image_range
          and not any(name.startswith(VISUAL + "/") for name in saved)
          and (VISUAL in params or model_cfg.image_head == "tied"))


def _drops(model_cfg) -> dict[str, Callable[[jax.Array], jax.Array]]:
  """name -> how the saved array becomes this run's, for the parameters whose shape changes."""
  base, codes = model_cfg.image_base, model_cfg.image_codes
  drops = {}
  if model_cfg.image_embedding != "table":
    drops["embed/table"] = lambda t: jnp.concatenate([t[:base], t[base + codes:]], axis=0)
  if model_cfg.image_head == "tied":
    drops["lm_head"] = lambda k: jnp.concatenate([k[:, :base], k[:, base + codes:]], axis=1)
  return drops


def restore(restore_tree: Callable[[Any], Any], where: str, saved: dict[str, tuple[int, ...]],
            params: dict, shardings: dict, model_cfg, name_of: Callable) -> dict:
  """This run's params with everything but visual/* read from the table checkpoint `where`.

  `restore_tree(abstract)` reads the checkpoint into `abstract` (ShapeDtypeStructs with shardings);
  `name_of(path)` gives a parameter's "/"-joined name. Each dropped array is read whole in this run's
  sharding and cut on the devices."""
  drops = _drops(model_cfg)
  shared = {k: v for k, v in params.items() if k != VISUAL}
  shared_shardings = {k: v for k, v in shardings.items() if k != VISUAL}
  expected = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(shared)[0]:
    name = name_of(path)
    want = tuple(leaf.shape)
    if name not in saved:
      raise ValueError(f"{where}: parameter {name} is missing from the checkpoint")
    got = saved[name]
    if name in drops:
      axis = 0 if name == "embed/table" else 1
      grown = tuple(n + model_cfg.image_codes if i == axis else n for i, n in enumerate(want))
      if got != grown:
        raise ValueError(f"{where}: parameter {name} has shape {got}; a table model of this run's "
                         f"vocabulary has {grown} (this run drops the {model_cfg.image_codes} image ids')")
    elif got != want:
      raise ValueError(f"{where}: parameter {name} has shape {got}, the model expects {want}")
    expected[name] = got
  extra = sorted(set(saved) - set(expected))
  if extra:
    raise ValueError(f"{where}: parameter {extra[0]} is in the checkpoint but not in this model")
  abstract = jax.tree_util.tree_map_with_path(
      lambda path, leaf, sh: jax.ShapeDtypeStruct(expected[name_of(path)], leaf.dtype, sharding=sh),
      shared, shared_shardings)
  loaded = restore_tree(abstract)
  leaves, treedef = jax.tree_util.tree_flatten_with_path(loaded)
  adapted = [_adapt(drops.get(name_of(path)), array, sharding)
             for (path, array), sharding in zip(leaves, jax.tree_util.tree_leaves(shared_shardings))]
  out = jax.tree_util.tree_unflatten(treedef, adapted)
  return {**out, VISUAL: params[VISUAL]} if VISUAL in params else out


def _adapt(drop, array: jax.Array, sharding) -> jax.Array:
  return array if drop is None else jax.jit(drop, out_shardings=sharding)(array)
