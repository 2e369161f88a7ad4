"""SEANet encoder and decoder of SpeechTokenizer (the fixed choices of its model: weight-normed
non-causal convs, reflect padding, compress 2, 1x1 conv shortcuts, kernels 7/7)."""

from flax import nnx

from tokenizers_port.speechtokenizer.config import SpeechTokenizerConfig
from tokenizers_port.speechtokenizer.layers import (Conv1d, ConvTranspose1d, make_activation,
                                                    mask_time, out_lengths)
from tokenizers_port.speechtokenizer.lstm import SLSTM

KERNEL = 7
LAST_KERNEL = 7
COMPRESS = 2


class ResBlock(nnx.Module):
  """shortcut(x) + conv1x1(act(conv_k(act(x)))), hidden width dim // 2."""

  def __init__(self, dim: int, kernel: int, dilation: int, activation: str):
    hidden = dim // COMPRESS
    self.act1 = make_activation(activation, dim)
    self.conv1 = Conv1d(dim, hidden, kernel, dilation=dilation)
    self.act2 = make_activation(activation, hidden)
    self.conv2 = Conv1d(hidden, dim, 1)
    self.shortcut = Conv1d(dim, dim, 1)

  def __call__(self, x, lengths=None):
    y = self.conv2(self.act2(self.conv1(self.act1(x), lengths)))
    return self.shortcut(x) + y


class EncoderStage(nnx.Module):
  """Residual blocks, activation, then the strided conv that doubles the channels."""

  def __init__(self, dim: int, stride: int, cfg: SpeechTokenizerConfig):
    self.res = nnx.List([ResBlock(dim, cfg.residual_kernel_size, cfg.dilation_base ** j,
                                  cfg.activation) for j in range(cfg.n_residual_layers)])
    self.act = make_activation(cfg.activation, dim)
    self.down = Conv1d(dim, 2 * dim, 2 * stride, stride=stride)

  def __call__(self, x, lengths=None):
    for block in self.res:
      x = block(x, lengths)
    return self.down(self.act(x), lengths), out_lengths(lengths, self.down.stride)


class Encoder(nnx.Module):
  """[B, T, 1] waveform -> [B, ceil(T / hop), dimension] features."""

  def __init__(self, cfg: SpeechTokenizerConfig):
    nf = cfg.n_filters
    self.conv_in = Conv1d(1, nf, KERNEL)
    self.stages = nnx.List([EncoderStage(nf * 2 ** i, s, cfg)
                            for i, s in enumerate(reversed(cfg.strides))])
    width = nf * 2 ** len(cfg.strides)
    self.lstm = SLSTM(width, cfg.lstm_layers, cfg.bidirectional) if cfg.lstm_layers else None
    if cfg.bidirectional:
      width *= 2
    self.act = make_activation(cfg.activation, width)
    self.conv_out = Conv1d(width, cfg.dimension, LAST_KERNEL)

  def __call__(self, x, lengths=None):
    x = self.conv_in(x, lengths)
    for stage in self.stages:
      x, lengths = stage(x, lengths)
    if self.lstm is not None:
      x = self.lstm(x, lengths)
    return self.conv_out(self.act(x), lengths)


class DecoderStage(nnx.Module):
  """Activation, transposed conv that halves the channels, then residual blocks."""

  def __init__(self, dim: int, stride: int, cfg: SpeechTokenizerConfig):
    self.act = make_activation(cfg.activation, dim)
    self.up = ConvTranspose1d(dim, dim // 2, 2 * stride, stride)
    self.res = nnx.List([ResBlock(dim // 2, cfg.residual_kernel_size, cfg.dilation_base ** j,
                                  cfg.activation) for j in range(cfg.n_residual_layers)])

  def __call__(self, x, lengths=None):
    x = self.up(mask_time(self.act(x), lengths))
    lengths = None if lengths is None else lengths * self.up.stride
    for block in self.res:
      x = block(x, lengths)
    return x, lengths


class Decoder(nnx.Module):
  """[B, frames, dimension] -> [B, frames * hop, 1] waveform (unidirectional LSTM)."""

  def __init__(self, cfg: SpeechTokenizerConfig):
    width = cfg.n_filters * 2 ** len(cfg.strides)
    self.conv_in = Conv1d(cfg.dimension, width, KERNEL)
    self.lstm = SLSTM(width, cfg.lstm_layers, False) if cfg.lstm_layers else None
    self.stages = nnx.List([DecoderStage(width // 2 ** i, s, cfg)
                            for i, s in enumerate(cfg.strides)])
    self.act = make_activation(cfg.activation, cfg.n_filters)
    self.conv_out = Conv1d(cfg.n_filters, 1, LAST_KERNEL)

  def __call__(self, x, lengths=None):
    x = self.conv_in(x, lengths)
    if self.lstm is not None:
      x = self.lstm(x, lengths)
    for stage in self.stages:
      x, lengths = stage(x, lengths)
    return self.conv_out(self.act(x), lengths)
