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

The rest must match by name and shape, as for any init_from: mio_jax/train/checkpoint.py's
load_params checks and reads it; this module says what differs and cuts.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

VISUAL = "visual"


def image_cuts(saved: dict[str, tuple[int, ...]], params: dict, model_cfg) -> dict[str, int] | None:
  """{parameter name: the axis whose image ids this run drops} when `saved` (name -> shape) is a
  table checkpoint and this run reads image ids apart; None for a plain load."""
  if (model_cfg is None or not model_cfg.uses_image_range
      or any(name.startswith(VISUAL + "/") for name in saved)):
    return None
  cuts = {}
  if model_cfg.image_embedding != "table":
    cuts["embed/table"] = 0
  if model_cfg.image_head == "tied":
    cuts["lm_head"] = 1
  return cuts


def without_visual(tree: dict) -> dict:
  return {k: v for k, v in tree.items() if k != VISUAL}


def table_shape(shape: tuple[int, ...], axis: int, image_codes: int) -> tuple[int, ...]:
  """The table model's shape of a parameter this run holds as `shape`, cut on `axis`."""
  return tuple(n + image_codes if i == axis else n for i, n in enumerate(shape))


def cut_image_ids(loaded: dict, params: dict, shardings: dict, cuts: dict[str, int], model_cfg,
                  name_of: Callable) -> dict:
  """This run's params: `loaded` (the table checkpoint's arrays) with the image ids' rows / columns
  cut on the devices, into this run's shardings, and `params`' own visual/* (its fresh init)."""
  base, codes = model_cfg.image_base, model_cfg.image_codes

  def cut(path, array, sharding):
    axis = cuts.get(name_of(path))
    if axis is None:
      return array
    keep = lambda t: jnp.concatenate([jax.lax.slice_in_dim(t, 0, base, axis=axis),  # noqa: E731
                                      jax.lax.slice_in_dim(t, base + codes, t.shape[axis], axis=axis)],
                                     axis=axis)
    return jax.jit(keep, out_shardings=sharding)(array)

  out = jax.tree_util.tree_map_with_path(cut, loaded, without_visual(shardings))
  return {**out, VISUAL: params[VISUAL]} if VISUAL in params else out
