"""Oracle helpers shared by the SigLIP port's tests: transformers' PyTorch model and image processor,
big_vision's ViT (vendored in big_vision_reference/), the photographs both are fed."""

import numpy as np

from big_vision_reference import utils as bv_utils  # tests/tokenizers_port/big_vision_reference
from big_vision_reference import vit as bv_vit


def rel_err(got, want) -> float:
  return float(np.abs(got - want).max() / np.abs(want).max())


def native_photos() -> list[np.ndarray]:
  """Three scikit-image photographs at their own sizes (512 x 512, 400 x 600, 300 x 451)."""
  from skimage import data
  return [data.astronaut(), data.coffee(), data.chelsea()]


def hf_processor(size: int):
  from transformers import SiglipImageProcessorPil
  return SiglipImageProcessorPil(size={"height": size, "width": size})


def hf_pixels(images, size: int) -> np.ndarray:
  """SiglipImageProcessor's pixel_values [B, 3, S, S] of uint8 images."""
  return hf_processor(size)(images=list(images), return_tensors="np")["pixel_values"]


def hf_vision_config(cfg):
  return dict(hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
              num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
              image_size=cfg.image_size, patch_size=cfg.patch_size)


def perturb_torch(model, seed: int) -> None:
  """HF init leaves biases at 0 and LayerNorms at (1, 0): give every 1-d tensor noise."""
  import torch
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for _, p in sorted(model.named_parameters()):
      if p.ndim == 1:
        p.add_(0.2 * torch.randn(p.shape, generator=g))


def hf_outputs(model, pixels):
  import torch
  with torch.no_grad():
    o = model(pixel_values=torch.from_numpy(pixels))
  return o.last_hidden_state.numpy(), o.pooler_output.numpy()


def bv_model(cfg, scan: bool):
  return bv_vit.Model(None, patch_size=(cfg.patch_size,) * 2, width=cfg.hidden_size,
                      depth=cfg.num_hidden_layers, mlp_dim=cfg.intermediate_size,
                      num_heads=cfg.num_attention_heads, pool_type="map", scan=scan)


def bv_random_params(model, x, seed: int):
  """big_vision's init, then noise on what it initialises to constants (biases at 0, LayerNorm
  scales at 1), as perturb_torch does on the HF side, so that every tensor matters."""
  import jax
  params = model.init(jax.random.PRNGKey(seed), x[:1])["params"]
  named, tree = bv_utils.tree_flatten_with_names(params)
  rng = np.random.default_rng(seed)
  leaves = [np.asarray(v) + (0.2 * rng.standard_normal(v.shape).astype(np.float32)
                             if name.endswith(("bias", "scale")) else 0) for name, v in named]
  return jax.tree.unflatten(tree, leaves)


def save_big_vision_npz(tree: dict, path: str) -> None:
  """As big_vision writes .npz checkpoints: leaves named by its tree_flatten_with_names."""
  names = bv_utils.tree_flatten_with_names(tree)[0]
  np.savez(path, **{name: np.asarray(v) for name, v in names})


# The released configs as published on the Hugging Face hub (weights not needed):
# huggingface.co/google/siglip-so400m-patch14-384/blob/main/{config,preprocessor_config}.json, and
# google/siglip-base-patch16-224's, whose vision_config sets only patch_size (the rest are
# SiglipVisionConfig's defaults, documented as that checkpoint's).
_PROCESSOR = {"do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": [0.5, 0.5, 0.5],
              "image_processor_type": "SiglipImageProcessor", "image_std": [0.5, 0.5, 0.5],
              "processor_class": "SiglipProcessor", "resample": 3,
              "rescale_factor": 0.00392156862745098}
OFFICIAL_HF = {
    "So400m/14-384": (
        {"architectures": ["SiglipModel"], "initializer_factor": 1.0, "model_type": "siglip",
         "text_config": {"hidden_size": 1152, "intermediate_size": 4304, "model_type": "siglip_text_model",
                         "num_attention_heads": 16, "num_hidden_layers": 27},
         "torch_dtype": "float32", "transformers_version": "4.37.0.dev0",
         "vision_config": {"hidden_size": 1152, "image_size": 384, "intermediate_size": 4304,
                           "model_type": "siglip_vision_model", "num_attention_heads": 16,
                           "num_hidden_layers": 27, "patch_size": 14}},
        {**_PROCESSOR, "size": {"height": 384, "width": 384}}),
    "B/16-224": (
        {"architectures": ["SiglipModel"], "initializer_factor": 1.0, "model_type": "siglip",
         "text_config": {"hidden_size": 768, "intermediate_size": 3072, "model_type": "siglip_text_model",
                         "num_attention_heads": 12, "vocab_size": 32000},
         "transformers_version": "4.37.0.dev0",
         "vision_config": {"model_type": "siglip_vision_model", "patch_size": 16}},
        {**_PROCESSOR, "size": {"height": 224, "width": 224}}),
}


def official_vision_config(preset: str) -> dict:
  """The released vision_config as SiglipVisionConfig keyword arguments."""
  return {k: v for k, v in OFFICIAL_HF[preset][0]["vision_config"].items() if k != "model_type"}
