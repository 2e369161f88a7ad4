"""Codebook k-means config (mio_jax/codebook, docs/codebook.md): `--config=configs/codebook.py:PRESET`.

Presets:
  tiny      a CPU-sized fit: 64 clusters, mini-batch, k-means++ (e.g. on the blobs of
            `python -m mio_jax.codebook.demo_data OUT`)
  unicode2  the paper's scale: 500,000 clusters of SigLIP So400m/14 patch embeddings (d = 1152),
            mini-batch, random-sample init, centroids sharded over every device
Always pass --config.data.embeddings=DIR (a folder of .npy [n_i, d] float files).
"""

import ml_collections


def get_config(preset: str = "tiny") -> ml_collections.ConfigDict:
  if preset not in ("tiny", "unicode2"):
    raise ValueError(f"codebook preset {preset!r} is not one of tiny, unicode2")
  tiny = preset == "tiny"
  c = ml_collections.ConfigDict()
  c.data = ml_collections.ConfigDict(dict(embeddings="", streams=1, shuffle=True))
  c.num_clusters = 64 if tiny else 500_000
  c.global_batch = 256 if tiny else 65_536  # points per step, split over the data and fsdp axes
  c.passes = 5 if tiny else 2  # reads of every point
  # "minibatch": Sculley's update every step (each centroid the running mean of its points);
  # "lloyd": sums and counts over a whole pass, centroids moved at its end (full-batch Lloyd).
  c.algorithm = "minibatch"
  # "kmeans++" (O(K x init_points x d) sequential: small K) or "random" (distinct sample points).
  c.init = "kmeans++" if tiny else "random"
  c.init_points = 2048 if tiny else 1_048_576  # the first batches' points, >= num_clusters
  # Centroid rows per block of the nearest-centroid scan: a [global_batch, block_size] float32 score
  # tile per device (64K x 4096: 1 GiB).
  c.block_size = 1024 if tiny else 4096
  # "highest": float32 scores (exact ids); "high"/"default": bf16 passes on TPU, faster, ids may differ
  # on near-ties of the TPU's lower precision.
  c.matmul_precision = "highest"
  c.reseed = "farthest"  # clusters with no point in a whole pass get the farthest points; or "none"
  c.reseed_pool = 256  # candidate points kept per pass (lloyd) or taken per batch (minibatch)
  # UniCode2's regulariser is not described: "usage_ema" re-seeds clusters whose usage falls under
  # min_usage x 1/K (mini-batch: an EMA per step with usage_decay; lloyd: the pass's share).
  c.utilisation = ml_collections.ConfigDict(dict(method="none" if tiny else "usage_ema",
                                                 usage_decay=0.99 if tiny else 0.999, min_usage=0.05))
  c.seed = 0
  # K is split over every device; points over data x fsdp (mio_jax/parallel/mesh.py).
  c.mesh = ml_collections.ConfigDict(dict(
      ici=dict(data=1, fsdp=-1, tensor=1), dcn=dict(data=-1, fsdp=1, tensor=1), processes_per_node=0))
  c.checkpoint_every = 50 if tiny else 500  # steps; 0: only at the end
  c.keep = 3
  c.async_checkpoint = not tiny
  c.log_every = 10 if tiny else 50
  return c
