"""The SpeechTokenizer network in flax.nnx: SEANet encoder, residual VQ, SEANet decoder."""

import jax.numpy as jnp
from flax import nnx

from tokenizers_port.speechtokenizer.config import SpeechTokenizerConfig
from tokenizers_port.speechtokenizer.rvq import ResidualVQ
from tokenizers_port.speechtokenizer.seanet import Decoder, Encoder


class SpeechTokenizerModel(nnx.Module):
  """Weights start at zero: real ones come from `nnx.update` with a converted checkpoint."""

  def __init__(self, cfg: SpeechTokenizerConfig):
    self.cfg = cfg
    self.encoder = Encoder(cfg)
    self.quantizer = ResidualVQ(cfg.n_q, cfg.codebook_size, cfg.dimension)
    self.decoder = Decoder(cfg)

  def features(self, waves, lengths=None):
    """[B, T] float32 waveform -> pre-quantizer features [B, ceil(T/hop), dimension]."""
    return self.encoder(waves[:, :, None], lengths)

  def encode(self, waves, lengths=None, n_q: int | None = None):
    """[B, T] waveform -> int32 codes [n_q, B, ceil(T/hop)]."""
    return self.quantizer.encode(self.features(waves, lengths), n_q or self.cfg.n_q)

  def decode(self, codes, lengths=None):
    """int codes [n_q, B, F] (lengths in frames, optional) -> waveform [B, F * hop]."""
    x = self.quantizer.decode(jnp.asarray(codes, jnp.int32))
    return self.decoder(x, lengths)[:, :, 0]
