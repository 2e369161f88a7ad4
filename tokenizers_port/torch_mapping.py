"""A torch state_dict mapped onto a Flax model's parameters, shared by the image tokenizer
converters: each parameter path's torch key, read, shape-checked and turned into the Flax layout."""

from collections.abc import Callable

import numpy as np


def map_state_dict(sd: dict[str, np.ndarray], abstract: dict[tuple, tuple], *,
                   key_of: Callable[[tuple], str], get: Callable[[str], np.ndarray],
                   torch_shape: Callable[[tuple, tuple], tuple],
                   torch_to_flax: Callable[[tuple, np.ndarray], np.ndarray],
                   source_of: Callable[[str], str], error: type[Exception]
                   ) -> tuple[dict[tuple, np.ndarray], list[str]]:
  """(our parameters by path, the sorted keys of `sd` no parameter used). `abstract` maps each path
  to its Flax shape; `get` raises for a missing key; a mis-shaped key raises `error` naming the
  file `source_of(key)` and the key."""
  params, used = {}, set()
  for path, shape in abstract.items():
    key = key_of(path)
    w = get(key)
    want = torch_shape(path, shape)
    if tuple(w.shape) != want:
      raise error(f"{source_of(key)}: key {key!r} has shape {tuple(w.shape)}, expected {want}")
    params[path] = torch_to_flax(path, w)
    used.add(key)
  return params, sorted(set(sd) - used)
