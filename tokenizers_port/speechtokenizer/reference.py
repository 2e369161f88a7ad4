"""The PyTorch reference (the `speechtokenizer` package's model) for tests and benchmarks only.

The package's `__init__` imports its trainer (beartype, accelerate, ...), so the model module is
imported under an empty stand-in package that only carries the right `__path__`. The reference
is random-init from a config; `make_realistic` then standardizes its output features and fits
every RVQ layer's codebook to real encoder residuals, so the nearest-code search is as close a
call as in a trained model.
"""

import importlib.util
import json
import os
import sys
import types

import numpy as np

from tokenizers_port.kmeans import kmeans, nearest

# The model keys of the released speechtokenizer_hubert_avg config.json (spt_base_cfg.json).
OFFICIAL_CONFIG = {
    "n_filters": 64,
    "strides": [8, 5, 4, 2],
    "dimension": 1024,
    "semantic_dimension": 768,
    "bidirectional": True,
    "dilation_base": 2,
    "residual_kernel_size": 3,
    "n_residual_layers": 1,
    "lstm_layers": 2,
    "activation": "ELU",
    "codebook_size": 1024,
    "n_q": 8,
    "sample_rate": 16000,
}

# Same code path, smaller widths: what most tests run on a 2-core box.
SMALL_CONFIG = dict(OFFICIAL_CONFIG, n_filters=8, dimension=64, semantic_dimension=48,
                    codebook_size=256)


def import_reference():
  """Returns the `speechtokenizer.model` module without running the package `__init__`."""
  if "speechtokenizer.model" in sys.modules:
    return sys.modules["speechtokenizer.model"]
  spec = importlib.util.find_spec("speechtokenizer")
  if spec is None:
    raise ImportError("the PyTorch reference needs `pip install --no-deps speechtokenizer==1.0.1`")
  if "speechtokenizer" not in sys.modules:
    stub = types.ModuleType("speechtokenizer")
    stub.__path__ = list(spec.submodule_search_locations)
    sys.modules["speechtokenizer"] = stub
  return importlib.import_module("speechtokenizer.model")


def build_reference(config: dict, seed: int = 0):
  """A random-init reference SpeechTokenizer in eval mode."""
  import torch
  torch.manual_seed(seed)
  model = import_reference().SpeechTokenizer(config)
  _randomize_snake_alphas(model, seed)
  return model.eval()


def _randomize_snake_alphas(model, seed):
  # Snake alphas start at 1.0; spread them so a port that ignores them fails.
  import torch
  gen = torch.Generator().manual_seed(seed + 1)
  for name, p in model.named_parameters():
    if name.endswith(".alpha"):
      with torch.no_grad():
        p.copy_(0.5 + torch.rand(p.shape, generator=gen))


def _standardize(convs, run, scale: float = 1.0):
  """LSUV-style data-dependent init: in forward order, rescales each conv's weight_g and bias so
  its output (over whatever `run()` feeds the network) has zero mean and std `scale` per channel."""
  import torch
  for sconv in convs:
    seen = []
    hook = sconv.register_forward_hook(
        lambda mod, inp, out: seen.append(out.transpose(1, 2).reshape(-1, out.shape[1]).double()))
    with torch.no_grad():
      run()
    hook.remove()
    out = torch.cat(seen)
    mean, std = out.mean(0), (out.std(0) + 1e-12) / scale
    conv = sconv.conv.conv
    with torch.no_grad():
      conv.weight_g.copy_((conv.weight_g.double() / std[:, None, None]).float())
      conv.bias.copy_(((conv.bias.double() - mean) / std).float())


def _sconvs(module):
  return [m for m in module.modules() if type(m).__name__ == "SConv1d"]


def standardize_encoder(model, waves: list[np.ndarray]):
  """A default-init encoder's output is mostly bias (frames differ by ~3% of their norm); scaled
  up, float32 rounding of that degenerate signal swamps everything and every nearest-code
  search becomes a rounding tie. Trained encoders have well-scaled activations; so does this."""
  batch = _batch(waves)
  _standardize(_sconvs(model.encoder), lambda: model.encoder(batch))


def standardize_decoder(model, waves: list[np.ndarray]):
  """Same for the decoder, fed the quantized codes of `waves`; the waveform ends at std 0.1."""
  import torch
  with torch.no_grad():
    quantized = model.quantizer.decode(model.encode(_batch(waves)))
  convs = _sconvs(model.decoder)
  _standardize(convs[:-1], lambda: model.decoder(quantized))
  _standardize(convs[-1:], lambda: model.decoder(quantized), scale=0.1)


def _batch(waves: list[np.ndarray]):
  import torch
  n = min(w.shape[0] for w in waves)
  return torch.from_numpy(np.stack([w[:n] for w in waves]))[:, None].float()


def make_realistic(model, waves: list[np.ndarray], seed: int = 0, stats_clips: int = 4,
                   stats_samples: int = 16000):
  """Standardized encoder activations, codebooks fitted to its residuals, then a standardized
  decoder: a random network in a trained network's numerical regime. Activation statistics
  come from the first `stats_clips` clips cut (or tiled) to `stats_samples` samples."""
  short = [np.resize(w, stats_samples) for w in waves[:stats_clips]]
  standardize_encoder(model, short)
  calibrate_codebooks(model, waves, seed=seed)
  standardize_decoder(model, short)


def calibrate_codebooks(model, waves: list[np.ndarray], iters: int = 4, noise: float = 0.02,
                        seed: int = 0):
  """Sets each RVQ codebook by k-means on encoder residuals of `waves`, layer by layer.

  Random-sample seeding then a few Lloyd steps (float64), plus small noise: codes sit among the
  data like trained centroids, so nearest-code search sees realistic gaps between best codes.
  """
  import torch
  rng = np.random.default_rng(seed)
  with torch.no_grad():
    feats = [model.encoder(torch.from_numpy(w)[None, None].float())[0].T for w in waves]
    residual = torch.cat(feats, 0).double().numpy()  # [N, D]
    for layer in model.quantizer.vq.layers:
      book = layer._codebook
      codes = kmeans(residual, book.embed.shape[0], iters, rng)
      codes += noise * residual.std(0, keepdims=True) * rng.standard_normal(codes.shape)
      book.embed.copy_(torch.from_numpy(codes).float())
      book.embed_avg.copy_(book.embed)
      embed = book.embed.double().numpy()
      residual = residual - embed[nearest(residual, embed)]


def save_released_layout(model, config: dict, out_dir: str) -> tuple[str, str]:
  """Writes `SpeechTokenizer.pt` (state dict, weight_g/weight_v keys) and `config.json`."""
  import torch
  os.makedirs(out_dir, exist_ok=True)
  ckpt = os.path.join(out_dir, "SpeechTokenizer.pt")
  cfg = os.path.join(out_dir, "config.json")
  torch.save(model.state_dict(), ckpt)
  with open(cfg, "w") as f:
    json.dump(config, f, indent=2)
  return ckpt, cfg
