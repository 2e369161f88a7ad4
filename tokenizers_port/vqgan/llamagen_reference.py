"""PyTorch oracle for LlamaGen's VQ tokenizer: a transcription of the inference path of
FoundationVision/LlamaGen `tokenizer/tokenizer_image/vq_model.py` (not on PyPI), for tests and
benchmarks only. Module names, layer order and the quantizer's distance formula are kept as in
the source so the state_dict has the released key layout; training-only losses are left out.
"""

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class ModelArgs:
  codebook_size: int = 16384
  codebook_embed_dim: int = 8
  codebook_l2_norm: bool = True
  codebook_show_usage: bool = True
  encoder_ch_mult: list = field(default_factory=lambda: [1, 1, 2, 2, 4])
  decoder_ch_mult: list = field(default_factory=lambda: [1, 1, 2, 2, 4])
  z_channels: int = 256
  dropout_p: float = 0.0
  ch: int = 128  # Not a ModelArgs field upstream (fixed at 128 there); here to test narrow models.


def nonlinearity(x):
  return x * torch.sigmoid(x)


def Normalize(in_channels):
  return nn.GroupNorm(num_groups=32, num_channels=in_channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
  def __init__(self, in_channels, out_channels, dropout=0.0):
    super().__init__()
    self.in_channels, self.out_channels = in_channels, out_channels
    self.norm1 = Normalize(in_channels)
    self.conv1 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
    self.norm2 = Normalize(out_channels)
    self.dropout = nn.Dropout(dropout)
    self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1)
    if in_channels != out_channels:
      self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1, 1, 0)

  def forward(self, x):
    h = self.conv1(nonlinearity(self.norm1(x)))
    h = self.conv2(self.dropout(nonlinearity(self.norm2(h))))
    if self.in_channels != self.out_channels:
      x = self.nin_shortcut(x)
    return x + h


class AttnBlock(nn.Module):
  def __init__(self, in_channels):
    super().__init__()
    self.norm = Normalize(in_channels)
    self.q = nn.Conv2d(in_channels, in_channels, 1)
    self.k = nn.Conv2d(in_channels, in_channels, 1)
    self.v = nn.Conv2d(in_channels, in_channels, 1)
    self.proj_out = nn.Conv2d(in_channels, in_channels, 1)

  def forward(self, x):
    h_ = self.norm(x)
    q, k, v = self.q(h_), self.k(h_), self.v(h_)
    b, c, h, w = q.shape
    q = q.reshape(b, c, h * w).permute(0, 2, 1)
    k = k.reshape(b, c, h * w)
    w_ = F.softmax(torch.bmm(q, k) * (int(c) ** (-0.5)), dim=2)
    v = v.reshape(b, c, h * w)
    h_ = torch.bmm(v, w_.permute(0, 2, 1)).reshape(b, c, h, w)
    return x + self.proj_out(h_)


class Upsample(nn.Module):
  def __init__(self, in_channels):
    super().__init__()
    self.conv = nn.Conv2d(in_channels, in_channels, 3, 1, 1)

  def forward(self, x):
    return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Downsample(nn.Module):
  def __init__(self, in_channels):
    super().__init__()
    self.conv = nn.Conv2d(in_channels, in_channels, 3, 2, 0)

  def forward(self, x):
    return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0))


class Encoder(nn.Module):
  def __init__(self, in_channels=3, ch=128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2,
               dropout=0.0, z_channels=256):
    super().__init__()
    self.num_resolutions, self.num_res_blocks = len(ch_mult), num_res_blocks
    self.conv_in = nn.Conv2d(in_channels, ch, 3, 1, 1)
    in_ch_mult = (1,) + tuple(ch_mult)
    self.conv_blocks = nn.ModuleList()
    for i_level in range(self.num_resolutions):
      conv_block = nn.Module()
      res_block, attn_block = nn.ModuleList(), nn.ModuleList()
      block_in, block_out = ch * in_ch_mult[i_level], ch * ch_mult[i_level]
      for _ in range(num_res_blocks):
        res_block.append(ResnetBlock(block_in, block_out, dropout))
        block_in = block_out
        if i_level == self.num_resolutions - 1:
          attn_block.append(AttnBlock(block_in))
      conv_block.res, conv_block.attn = res_block, attn_block
      if i_level != self.num_resolutions - 1:
        conv_block.downsample = Downsample(block_in)
      self.conv_blocks.append(conv_block)
    self.mid = nn.ModuleList([ResnetBlock(block_in, block_in, dropout), AttnBlock(block_in),
                              ResnetBlock(block_in, block_in, dropout)])
    self.norm_out = Normalize(block_in)
    self.conv_out = nn.Conv2d(block_in, z_channels, 3, 1, 1)

  def forward(self, x):
    h = self.conv_in(x)
    for i_level, block in enumerate(self.conv_blocks):
      for i_block in range(self.num_res_blocks):
        h = block.res[i_block](h)
        if len(block.attn) > 0:
          h = block.attn[i_block](h)
      if i_level != self.num_resolutions - 1:
        h = block.downsample(h)
    for mid_block in self.mid:
      h = mid_block(h)
    return self.conv_out(nonlinearity(self.norm_out(h)))


class Decoder(nn.Module):
  def __init__(self, z_channels=256, ch=128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2,
               dropout=0.0, out_channels=3):
    super().__init__()
    self.num_resolutions, self.num_res_blocks = len(ch_mult), num_res_blocks
    block_in = ch * ch_mult[self.num_resolutions - 1]
    self.conv_in = nn.Conv2d(z_channels, block_in, 3, 1, 1)
    self.mid = nn.ModuleList([ResnetBlock(block_in, block_in, dropout), AttnBlock(block_in),
                              ResnetBlock(block_in, block_in, dropout)])
    self.conv_blocks = nn.ModuleList()
    for i_level in reversed(range(self.num_resolutions)):
      conv_block = nn.Module()
      res_block, attn_block = nn.ModuleList(), nn.ModuleList()
      block_out = ch * ch_mult[i_level]
      for _ in range(num_res_blocks + 1):
        res_block.append(ResnetBlock(block_in, block_out, dropout))
        block_in = block_out
        if i_level == self.num_resolutions - 1:
          attn_block.append(AttnBlock(block_in))
      conv_block.res, conv_block.attn = res_block, attn_block
      if i_level != 0:
        conv_block.upsample = Upsample(block_in)
      self.conv_blocks.append(conv_block)
    self.norm_out = Normalize(block_in)
    self.conv_out = nn.Conv2d(block_in, out_channels, 3, 1, 1)

  def forward(self, z):
    h = self.conv_in(z)
    for mid_block in self.mid:
      h = mid_block(h)
    for i_level, block in enumerate(self.conv_blocks):
      for i_block in range(self.num_res_blocks + 1):
        h = block.res[i_block](h)
        if len(block.attn) > 0:
          h = block.attn[i_block](h)
      if i_level != self.num_resolutions - 1:
        h = block.upsample(h)
    return self.conv_out(nonlinearity(self.norm_out(h)))


class VectorQuantizer(nn.Module):
  def __init__(self, n_e, e_dim, l2_norm, show_usage):
    super().__init__()
    self.n_e, self.e_dim, self.l2_norm = n_e, e_dim, l2_norm
    self.embedding = nn.Embedding(n_e, e_dim)
    self.embedding.weight.data.uniform_(-1.0 / n_e, 1.0 / n_e)
    if l2_norm:
      self.embedding.weight.data = F.normalize(self.embedding.weight.data, p=2, dim=-1)
    if show_usage:
      self.register_buffer("codebook_used", nn.Parameter(torch.zeros(65536)))

  def forward(self, z):
    """Returns (z_q NCHW, indices [B*h*w]) as the source's inference path computes them."""
    z = torch.einsum("b c h w -> b h w c", z).contiguous()
    z_flattened = z.view(-1, self.e_dim)
    if self.l2_norm:
      z = F.normalize(z, p=2, dim=-1)
      z_flattened = F.normalize(z_flattened, p=2, dim=-1)
      embedding = F.normalize(self.embedding.weight, p=2, dim=-1)
    else:
      embedding = self.embedding.weight
    d = (torch.sum(z_flattened ** 2, dim=1, keepdim=True) + torch.sum(embedding ** 2, dim=1)
         - 2 * torch.einsum("bd,dn->bn", z_flattened, torch.einsum("n d -> d n", embedding)))
    idx = torch.argmin(d, dim=1)
    z_q = embedding[idx].view(z.shape)
    return torch.einsum("b h w c -> b c h w", z_q), idx

  def get_codebook_entry(self, indices, shape):
    embedding = (F.normalize(self.embedding.weight, p=2, dim=-1) if self.l2_norm
                 else self.embedding.weight)
    z_q = embedding[indices].reshape(shape[0], shape[2], shape[3], shape[1])
    return z_q.permute(0, 3, 1, 2).contiguous()


class VQModel(nn.Module):
  def __init__(self, config: ModelArgs):
    super().__init__()
    self.config = config
    self.encoder = Encoder(ch=config.ch, ch_mult=config.encoder_ch_mult,
                           z_channels=config.z_channels, dropout=config.dropout_p)
    self.decoder = Decoder(ch=config.ch, ch_mult=config.decoder_ch_mult,
                           z_channels=config.z_channels, dropout=config.dropout_p)
    self.quantize = VectorQuantizer(config.codebook_size, config.codebook_embed_dim,
                                    config.codebook_l2_norm, config.codebook_show_usage)
    self.quant_conv = nn.Conv2d(config.z_channels, config.codebook_embed_dim, 1)
    self.post_quant_conv = nn.Conv2d(config.codebook_embed_dim, config.z_channels, 1)

  def decode(self, quant):
    return self.decoder(self.post_quant_conv(quant))
