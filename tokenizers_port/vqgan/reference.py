"""PyTorch oracles for tests and benchmarks (never imported by the tokenizer itself).

taming: the `taming-transformers-rom1504` Encoder/Decoder/VectorQuantizer2 under a wrapper whose
attribute names are those of `taming.models.vqgan.VQModel` (that module needs pytorch_lightning),
so its state_dict has the released Lightning checkpoint's key layout. LlamaGen: the transcription
in `llamagen_reference.py`. Models are random-init from a config; `calibrate_codebook` then draws
the codebook from real encoder outputs so the nearest-code search is a close call, as in a trained
model. `photographs` gives the few dozen real photos scikit-image ships.
"""

import numpy as np
import torch
from torch import nn

from tokenizers_port.vqgan import llamagen_reference as llamagen

# taming-transformers configs/imagenet_vqgan*.yaml (f16, 1024 or 16384 codes).
TAMING_OFFICIAL = dict(
    ddconfig=dict(double_z=False, z_channels=256, resolution=256, in_channels=3, out_ch=3, ch=128,
                  ch_mult=[1, 1, 2, 2, 4], num_res_blocks=2, attn_resolutions=[16], dropout=0.0),
    n_embed=16384, embed_dim=256)
# Narrow model on the same code path; attention at 32 px (level 1, not the last) on 64 px input.
TAMING_SMALL = dict(
    ddconfig=dict(double_z=False, z_channels=64, resolution=64, in_channels=3, out_ch=3, ch=32,
                  ch_mult=[1, 2, 2], num_res_blocks=1, attn_resolutions=[32], dropout=0.0),
    n_embed=512, embed_dim=32)
# LlamaGen VQ_16 (codebook 16384 x 8, L2-normalised).
LLAMAGEN_OFFICIAL = dict(codebook_size=16384, codebook_embed_dim=8, z_channels=256,
                         encoder_ch_mult=[1, 1, 2, 2, 4], decoder_ch_mult=[1, 1, 2, 2, 4])
LLAMAGEN_SMALL = dict(codebook_size=1024, codebook_embed_dim=8, z_channels=64, ch=32,
                      encoder_ch_mult=[1, 2, 2], decoder_ch_mult=[1, 2, 2])


class TamingVQModel(nn.Module):
  """taming.models.vqgan.VQModel's inference modules, without Lightning and the GAN loss."""

  def __init__(self, ddconfig, n_embed, embed_dim):
    super().__init__()
    from taming.modules.diffusionmodules.model import Decoder, Encoder
    from taming.modules.vqvae.quantize import VectorQuantizer2
    self.encoder = Encoder(**ddconfig)
    self.decoder = Decoder(**ddconfig)
    self.quantize = VectorQuantizer2(n_embed, embed_dim, beta=0.25)
    self.quant_conv = nn.Conv2d(ddconfig["z_channels"], embed_dim, 1)
    self.post_quant_conv = nn.Conv2d(embed_dim, ddconfig["z_channels"], 1)


def build(flavor: str, config: dict, seed: int = 0) -> nn.Module:
  torch.manual_seed(seed)
  if flavor == "taming":
    model = TamingVQModel(**config)
  else:
    model = llamagen.VQModel(llamagen.ModelArgs(**config))
  return model.eval()


@torch.inference_mode()
def latents(model, x_nchw):
  """Pre-quantisation latents (after quant_conv)."""
  return model.quant_conv(model.encoder(x_nchw))


@torch.inference_mode()
def codes(model, x_nchw):
  """int codes [B, h*w] in raster order, from the reference quantizer's own forward."""
  h = latents(model, x_nchw)
  if isinstance(model, TamingVQModel):
    idx = model.quantize(h)[2][2]
  else:
    idx = model.quantize(h)[1]
  return idx.reshape(h.shape[0], -1)


@torch.inference_mode()
def decode_codes(model, idx, h, w):
  """[B, h*w] codes -> float images NCHW, through the reference's codebook lookup."""
  b = idx.shape[0]
  if isinstance(model, TamingVQModel):
    zq = model.quantize.get_codebook_entry(idx.reshape(-1), (b, h, w, model.quantize.e_dim))
  else:
    zq = model.quantize.get_codebook_entry(idx.reshape(-1), (b, model.quantize.e_dim, h, w))
  return model.decoder(model.post_quant_conv(zq))


@torch.inference_mode()
def calibrate_codebook(model, images_nchw, noise: float = 0.5, seed: int = 0) -> None:
  """Codebook = encoder outputs at random positions of `images` plus Gaussian noise of `noise`
  times their per-dimension std, so test latents land among many close competitors."""
  g = torch.Generator().manual_seed(seed)
  z = latents(model, images_nchw).permute(0, 2, 3, 1).reshape(-1, model.quantize.e_dim)
  n = model.quantize.n_e
  rows = z[torch.randint(0, z.shape[0], (n,), generator=g)]
  rows = rows + noise * z.std(dim=0) * torch.randn(rows.shape, generator=g)
  model.quantize.embedding.weight.data.copy_(rows)


def save_released_layout(model, flavor: str, path: str) -> None:
  """Save as the released checkpoints are laid out (taming: Lightning; LlamaGen: {'model': ...})."""
  sd = {k: v.clone() for k, v in model.state_dict().items()}
  if flavor == "taming":
    # The Lightning state_dict also carries the GAN loss (LPIPS + discriminator); must be dropped.
    sd["loss.logvar"] = torch.zeros(())
    sd["loss.discriminator.main.0.weight"] = torch.randn(64, 3, 4, 4)
    ckpt = {"state_dict": sd, "epoch": 0, "global_step": 0}
  else:
    ckpt = {"model": sd, "steps": 0}
  torch.save(ckpt, path)


def photographs(size: int = 256) -> np.ndarray:
  """A few dozen distinct uint8 [N, size, size, 3] photos: scikit-image's bundled photographs,
  each as a centre crop of the whole picture and as four corner crops of 60% of its short side."""
  from PIL import Image
  from skimage import data
  colour = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket(), data.hubble_deep_field(),
            data.immunohistochemistry(), data.retina(), data.stereo_motorcycle()[0]]
  grey = [data.camera(), data.moon(), data.coins(), data.clock(), data.brick(), data.grass(),
          data.gravel()]
  out = []

  def square(img, top, left, side):
    crop = Image.fromarray(img[top:top + side, left:left + side])
    return np.asarray(crop.resize((size, size), Image.BICUBIC))

  for img in colour:
    h, w = img.shape[:2]
    s = min(h, w)
    out.append(square(img, (h - s) // 2, (w - s) // 2, s))
    c = int(0.6 * s)
    for top, left in ((0, 0), (0, w - c), (h - c, 0), (h - c, w - c)):
      out.append(square(img, top, left, c))
  for img in grey:
    h, w = img.shape[:2]
    s = min(h, w)
    out.append(np.repeat(square(img, (h - s) // 2, (w - s) // 2, s)[..., None], 3, axis=-1))
  return np.stack(out)


def to_nchw(images_uint8: np.ndarray) -> torch.Tensor:
  """uint8 NHWC -> float NCHW in [-1, 1], the input both reference families take."""
  return torch.from_numpy(images_uint8.astype(np.float32) / 127.5 - 1.0).permute(0, 3, 1, 2)
