"""Model presets. `mio_7b` is MIO-7B exactly (Yi-6B-Base extended to the multimodal vocabulary)."""

import ml_collections

from mio_jax.model.vocab_padding import padded_vocab_size

MIO_7B_VOCAB = dict(text_size=64000, image_codes=8192, speech_codebook=1024, speech_layers=4)
# The accelerator presets pad MIO's 76,294 ids to 76,800 (a multiple of 8 x 128): the vocab axis
# then splits over tensor axes up to 8; the padded ids are never predicted (vocab_padding.py).
MIO_VOCAB = dict(vocab_size=padded_vocab_size(76294), unpadded_vocab_size=76294)


def _model(**kw) -> ml_collections.ConfigDict:
  base = dict(
      norm_eps=1e-5,
      rope_theta=5_000_000.0,
      dtype="bfloat16",
      param_dtype="float32",
      attention_impl="auto",
      remat_policy="dots",
      scan_layers=True,
      unpadded_vocab_size=0,  # 0: vocab_size is the tokenizer's (CPU presets: no tensor axis)
      loss_chunk=0,  # tokens per row per chunk of the training loss's logits; 0: all at once
      cpu_tuned_matmuls=False,  # XLA-CPU-only graph rewrites (mio_jax/model/transformer.py)
      # Image-code ids (UniCode², mio_jax/model/visual_cascade.py, docs/unicode2.md): "table" (MIO's
      # embedding rows) | "frozen" (frozen centroids -> trainable linear map) | "cascade" (frozen
      # centroids -> trainable projector MLP + a trainable residual table starting at zero)
      image_embedding="table",
      image_codebook="",  # the centroids, float32 [vocab.image_codes, image_code_dim] (.npy | .safetensors)
      image_code_dim=0,  # the centroids' width: 1152 for SigLIP So400m/14, 768 for B/16
      image_projector_dim=0,  # the cascade projector's hidden width; 0: embed_dim
      image_head="separate",  # "separate" (the LM head's own image columns) | "tied" (the same cascade)
  )
  base.update(kw)
  return ml_collections.ConfigDict(base)


PRESETS = {
    # 32 layers, hidden 4096, 32 query heads of 128, 4 KV heads, SwiGLU 11008, vocab 76294.
    # At MIO's batch on v5p-128 (docs/scaling.md, "Remat policies"): save_qkv_out needs 30.3 GiB per
    # chip (dots 58.5, full 18.0, none does not fit); loss_chunk 350 (8 chunks of 2800) saves 10.6.
    "mio_7b": lambda: _model(**MIO_VOCAB, embed_dim=4096, num_layers=32, num_heads=32,
                             num_kv_heads=4, head_dim=128, mlp_dim=11008, loss_chunk=350,
                             remat_policy="save_qkv_out"),
    # ~1.0B parameters, for single-GPU MFU benchmarks (TinyLlama-like widths, MIO vocabulary).
    "1b": lambda: _model(**MIO_VOCAB, embed_dim=2048, num_layers=16, num_heads=16,
                         num_kv_heads=4, head_dim=128, mlp_dim=5632),
    # ~40M parameters, for CPU benchmarks against PyTorch (issue 2's shapes). Layers unrolled: on
    # XLA CPU a scan stores each layer's saved activations row-major in the loop's stacked buffers,
    # so the backward transposes them (and reads them through dynamic slices) for its matmuls;
    # unrolled, layout assignment picks the layouts the backward wants. Blocked causal attention
    # skips the masked half of the scores (docs/benchmarks.md, "Train step").
    "40m": lambda: _model(vocab_size=16384, embed_dim=512, num_layers=8, num_heads=8,
                          num_kv_heads=2, head_dim=64, mlp_dim=1408, scan_layers=False,
                          attention_impl="xla_blocked", cpu_tuned_matmuls=True),
    # A few hundred thousand parameters, for tests and the smoke run on 2 CPU cores. Layers unrolled
    # as in "40m": the demo's train step 0.52 s against 0.59 s scanned, and it compiles faster.
    "tiny": lambda: _model(vocab_size=13294, embed_dim=64, num_layers=2, num_heads=4,
                           num_kv_heads=2, head_dim=16, mlp_dim=192, dtype="float32",
                           remat_policy="none", scan_layers=False, cpu_tuned_matmuls=True),
}


def get_model(name: str) -> ml_collections.ConfigDict:
  if name not in PRESETS:
    raise ValueError(f"config.model preset {name!r} is not one of {sorted(PRESETS)}")
  return PRESETS[name]()
