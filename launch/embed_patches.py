"""SigLIP patch embeddings of the images of tokenization inputs: the points a UniCode2 codebook is
fit on (mio_jax/codebook/embed_patches.py, docs/unicode2.md).

  python launch/embed_patches.py --siglip=DIR --inputs=images.jsonl,folder:more/ --out=EMB \\
      [--patches_per_image=64] [--batch_size=8] [--shard=I/N]
  python launch/fit_codebook.py --config=configs/codebook.py:unicode2 --workdir=FIT \\
      --config.data.embeddings=EMB

--inputs takes the tokenization job's input specs (JSONL manifests, folder:DIR, tfds:NAME/SPLIT).
Images that cannot be used go to EMB/quarantine-*.jsonl with their reason.
"""

import os
import sys

sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from mio_jax.host_platform import default_to_cpu_without_accelerator  # noqa: E402

default_to_cpu_without_accelerator()  # before JAX starts: on a CPU-only machine libtpu stays quiet

from absl import app, flags  # noqa: E402

flags.DEFINE_string("siglip", None, "A converted SigLIP folder (python -m tokenizers_port.convert siglip).")
flags.DEFINE_string("inputs", None, "Tokenization input specs, comma-separated.")
flags.DEFINE_string("out", None, "Folder for the .npy embedding files, index and quarantine.")
flags.DEFINE_integer("batch_size", 8, "Images per encoder call (a multiple of the local devices).")
flags.DEFINE_integer("patches_per_image", 64, "Random patches kept per image (seeded); 0: all.")
flags.DEFINE_integer("rows_per_file", 65536, "Rows per .npy file.")
flags.DEFINE_integer("seed", 0, "Seed of the patch choice.")
flags.DEFINE_enum("dtype", "float32", ["float32", "float16"], "Stored dtype.")
flags.DEFINE_string("shard", "0/1", "I/N: this host takes images I, I + N, ...")
flags.DEFINE_string("tfds_data_dir", "", "TFDS data dir for tfds: inputs.")
flags.mark_flags_as_required(["siglip", "inputs", "out"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  import jax
  from tokenizers_port import siglip
  from mio_jax.codebook.embed_patches import EmbedOptions, embed_patches
  from mio_jax.tokenize.encoders import local_mesh
  from mio_jax.tokenize.manifests import ManifestError

  f = flags.FLAGS
  if f.batch_size % jax.local_device_count():
    sys.exit(f"error: --batch_size={f.batch_size} is not a multiple of the {jax.local_device_count()} "
             "local devices")
  try:
    index, count = (int(x) for x in f.shard.split("/"))
  except ValueError:
    sys.exit(f"error: --shard={f.shard!r} is not I/N")
  options = EmbedOptions(batch_size=f.batch_size, patches_per_image=f.patches_per_image,
                         rows_per_file=f.rows_per_file, seed=f.seed, dtype=f.dtype, shard=(index, count))
  try:
    encoder = siglip.load(f.siglip, mesh=local_mesh(f.batch_size))
    summary = embed_patches(encoder, f.inputs, f.out, options, f.tfds_data_dir or None)
  except (ValueError, OSError, ManifestError) as e:
    sys.exit(f"error: {e}")
  print(f"{f.out}: {summary['rows']} patch embeddings of width {summary['dim']} from "
        f"{summary['embedded']} images ({summary['quarantined']} quarantined) in {len(summary['files'])} files")


if __name__ == "__main__":
  app.run(main)
