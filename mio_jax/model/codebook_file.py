"""The frozen visual codebook's file (config.model.image_codebook): k-means centroids, float32
[codes, code_dim], as a `.npy` array or a `.safetensors` file (its tensor `centroids`, or its only one).

Only the header is read to check a file (`read_header`), and rows are read by range (`read_rows`):
a 500,000 x 1152 codebook is 2.3 GB, and each process reads just the rows its devices hold
(mio_jax/model/visual_cascade.py, `load_codebook`). Local paths and gs:// (mio_jax/storage.py).
"""

from __future__ import annotations

import json
import struct

import numpy as np

from mio_jax import storage

SAFETENSORS_NAME = "centroids"
FLOAT32 = np.dtype("<f4")


class CodebookFileError(ValueError):
  """The file cannot serve as a codebook; the message says why, without the path (the caller adds it)."""


def read_header(path: str) -> tuple[tuple[int, ...], np.dtype | str, int]:
  """(shape, dtype, byte offset of row 0) of the centroids in `path`; rows are C-ordered."""
  name = str(path)
  with storage.as_path(name).open("rb") as f:
    if name.endswith(".npy"):
      return _npy_header(f)
    if name.endswith(".safetensors"):
      return _safetensors_header(f)
  raise CodebookFileError("is neither a .npy nor a .safetensors file")


def _npy_header(f) -> tuple[tuple[int, ...], np.dtype, int]:
  try:
    version = np.lib.format.read_magic(f)
    read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    shape, fortran_order, dtype = read[version](f)
  except (ValueError, KeyError) as e:
    raise CodebookFileError(f"is not a readable .npy file ({e})") from None
  if fortran_order and len(shape) > 1:
    raise CodebookFileError("is Fortran-ordered; save it C-ordered (np.save of np.ascontiguousarray)")
  return tuple(shape), np.dtype(dtype), f.tell()


_SAFETENSORS_DTYPES = {"F32": FLOAT32, "F16": np.dtype("<f2"), "F64": np.dtype("<f8")}


def _safetensors_header(f) -> tuple[tuple[int, ...], np.dtype | str, int]:
  raw = f.read(8)
  if len(raw) < 8:
    raise CodebookFileError("is not a safetensors file (too short)")
  size = struct.unpack("<Q", raw)[0]
  try:
    header = json.loads(f.read(size))
  except (ValueError, UnicodeDecodeError):
    raise CodebookFileError("is not a safetensors file (unreadable header)") from None
  tensors = {k: v for k, v in header.items() if k != "__metadata__"}
  if SAFETENSORS_NAME in tensors:
    entry = tensors[SAFETENSORS_NAME]
  elif len(tensors) == 1:
    entry = next(iter(tensors.values()))
  else:
    raise CodebookFileError(f"holds {len(tensors)} tensors and none named {SAFETENSORS_NAME!r}")
  dtype = _SAFETENSORS_DTYPES.get(entry["dtype"], entry["dtype"])  # others (BF16, I32...): by name
  return tuple(entry["shape"]), dtype, 8 + size + entry["data_offsets"][0]


def check_codebook(shape: tuple[int, ...], dtype) -> None:
  """The centroids must be float32 [codes, code_dim]."""
  if len(shape) != 2:
    raise CodebookFileError(f"holds an array of rank {len(shape)} {tuple(shape)}, not [codes, code_dim]")
  if not (isinstance(dtype, np.dtype) and dtype == FLOAT32):
    raise CodebookFileError(f"holds {dtype} centroids, not float32")


def read_rows(path: str, start: int, stop: int) -> np.ndarray:
  """Rows start..stop-1 of the centroids, float32 [stop - start, code_dim]."""
  shape, dtype, offset = read_header(path)
  check_codebook(shape, dtype)
  if not 0 <= start <= stop <= shape[0]:
    raise ValueError(f"{path}: rows {start}..{stop} are outside its {shape[0]} centroids")
  row_bytes = shape[1] * FLOAT32.itemsize
  with storage.as_path(str(path)).open("rb") as f:
    f.seek(offset + start * row_bytes)
    raw = f.read((stop - start) * row_bytes)
  if len(raw) != (stop - start) * row_bytes:
    raise CodebookFileError(f"ends before row {stop} (truncated)")
  return np.frombuffer(raw, FLOAT32).reshape(stop - start, shape[1]).astype(np.float32)
