"""UniCode2's image tokenizer: image -> SigLIP's post-layernorm patch sequence -> the id of each
patch's nearest centroid in the frozen codebook (docs/unicode2.md). A folder:

  DIR/config.json    {"kind": "unicode2", "num_clusters": K, "dim": d, "codes_per_image": L,
                      "image_size": S, "block_size": rows per search block}
  DIR/siglip/        the converted SigLIP tower (python -m tokenizers_port.convert siglip ...)
  DIR/codebook.npy   the frozen centroids [K, d] float32 (launch/fit_codebook.py's WORKDIR/codebook.npy)

made by `python -m mio_jax.codebook.tokenizer --siglip DIR --codebook FIT/codebook.npy --out DIR`.

It lives here, not in tokenizers_port: it is a port (SigLIP) composed with this project's own codebook
search (search.py; tokenizers_port imports nothing from mio_jax). The ids are exact float32 nearest
centroids (ties to the lowest id), the search the k-means fit assigns with, so a patch gets the id the
fit counted it under.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from mio_jax import storage
from mio_jax.codebook import kmeans
from mio_jax.codebook.search import Layout
from mio_jax.parallel.rules import MESH_AXES

KIND = "unicode2"
CONFIG_KEYS = ("kind", "num_clusters", "dim", "codes_per_image", "image_size", "block_size")


class TokenizerError(ValueError):
  """A one-line error naming the file at fault."""


def local_codebook_mesh(batch_size: int) -> Mesh:
  """This process's devices as (data, 1, 1): images split over data, centroids over all of them."""
  devices = jax.local_devices()
  if batch_size % len(devices):
    raise ValueError(f"batch_size {batch_size} is not a multiple of the {len(devices)} local devices")
  return Mesh(np.array(devices).reshape(len(devices), 1, 1), MESH_AXES)


def read_config(directory: str) -> dict:
  path = os.path.join(directory, "config.json")
  try:
    with open(path) as f:
      cfg = json.load(f)
  except (OSError, ValueError) as e:
    raise TokenizerError(f"{path}: cannot read the UniCode2 tokenizer config ({e})") from None
  unknown, missing = sorted(set(cfg) - set(CONFIG_KEYS)), [k for k in CONFIG_KEYS if k not in cfg]
  if unknown or missing or cfg["kind"] != KIND:
    raise TokenizerError(f"{path}: not a UniCode2 tokenizer config (unknown keys {unknown}, missing "
                         f"{missing}, kind {cfg.get('kind')!r})")
  return cfg


def read_codebook(path: str, num_clusters: int | None = None, dim: int | None = None) -> np.ndarray:
  """The centroids [K, d] as float32, checked against the expected K and d when given."""
  try:
    with storage.as_path(path).open("rb") as f:
      c = np.load(f)
  except (OSError, ValueError) as e:
    raise TokenizerError(f"{path}: cannot read the codebook ({e})") from None
  if c.ndim != 2 or c.dtype.kind != "f":
    raise TokenizerError(f"{path}: a codebook is float [K, d], this is {c.dtype} {list(c.shape)}")
  if (num_clusters, dim) != (None, None) and c.shape != (num_clusters, dim):
    raise TokenizerError(f"{path}: {list(c.shape)} centroids, the config says [{num_clusters}, {dim}]")
  return np.asarray(c, np.float32)


class UniCode2Tokenizer:
  """encode(uint8 [B, H, W, 3]) -> int32 [B, L]: the nearest centroid of each SigLIP patch."""

  def __init__(self, directory: str, mesh: Mesh | None = None):
    from tokenizers_port import siglip
    self.config = read_config(directory)
    self.mesh = mesh or local_codebook_mesh(len(jax.local_devices()))
    self.siglip = siglip.load(os.path.join(directory, "siglip"), mesh=self.mesh, data_axis="data")
    cfg = self.config
    if (self.siglip.num_patches, self.siglip.width) != (cfg["codes_per_image"], cfg["dim"]):
      raise TokenizerError(f"{directory}/siglip: {self.siglip.num_patches} patches of width "
                           f"{self.siglip.width}, config.json says {cfg['codes_per_image']} of {cfg['dim']}")
    self.layout = Layout.of(cfg["num_clusters"], self.mesh.devices.size, cfg["block_size"])
    codebook = read_codebook(os.path.join(directory, "codebook.npy"), cfg["num_clusters"], cfg["dim"])
    self.centroids = kmeans.place_centroids(self.mesh, self.layout, codebook)
    self._assign = kmeans.make_assign(self.mesh, self.layout)

  @property
  def image_size(self) -> int:
    return self.config["image_size"]

  @property
  def codes_per_image(self) -> int:
    return self.config["codes_per_image"]

  @property
  def codebook_size(self) -> int:
    return self.config["num_clusters"]

  def encode(self, images) -> np.ndarray:
    patches = self.siglip.encode_patches(images)  # stays on the devices for the search
    b, n, d = patches.shape
    pad = -(b * n) % self.mesh.devices.size  # the points split evenly over the devices
    points = jnp.pad(patches.reshape(b * n, d), ((0, pad), (0, 0)))
    ids, _ = self._assign(self.centroids, points)
    return np.asarray(ids)[:b * n].reshape(b, n).astype(np.int32)


def load(directory: str, mesh: Mesh | None = None) -> UniCode2Tokenizer:
  return UniCode2Tokenizer(directory, mesh)


def make_tokenizer(siglip_dir: str, codebook: str, out: str, block_size: int = 4096) -> dict:
  """Copies the converted SigLIP folder and the fit's codebook into OUT with a config.json."""
  from tokenizers_port.siglip.config import load_config
  scfg = load_config(siglip_dir)
  centroids = read_codebook(codebook)
  if centroids.shape[1] != scfg.hidden_size:
    raise TokenizerError(f"{codebook}: centroids of width {centroids.shape[1]}, the SigLIP tower in "
                         f"{siglip_dir} gives patches of width {scfg.hidden_size}")
  os.makedirs(out, exist_ok=True)
  shutil.copytree(siglip_dir, os.path.join(out, "siglip"), dirs_exist_ok=True)
  np.save(os.path.join(out, "codebook.npy"), centroids)
  cfg = {"kind": KIND, "num_clusters": int(centroids.shape[0]), "dim": int(centroids.shape[1]),
         "codes_per_image": scfg.num_patches, "image_size": scfg.image_size, "block_size": block_size}
  storage.atomic_write_text(os.path.join(out, "config.json"), json.dumps(cfg, indent=1) + "\n")
  return cfg


def main(argv: list[str] | None = None) -> None:
  p = argparse.ArgumentParser(prog="python -m mio_jax.codebook.tokenizer", description=__doc__.split("\n")[0])
  p.add_argument("--siglip", required=True, help="a converted SigLIP folder")
  p.add_argument("--codebook", required=True, help="launch/fit_codebook.py's WORKDIR/codebook.npy")
  p.add_argument("--out", required=True)
  p.add_argument("--block_size", type=int, default=4096, help="centroid rows per search block")
  args = p.parse_args(argv)
  try:
    cfg = make_tokenizer(args.siglip, args.codebook, args.out, args.block_size)
  except (TokenizerError, ValueError, OSError) as e:
    sys.exit(f"error: {e}")
  print(f"{args.out}: UniCode2 tokenizer, {cfg['num_clusters']} codes of width {cfg['dim']}, "
        f"{cfg['codes_per_image']} per {cfg['image_size']} px image")


if __name__ == "__main__":
  main()
