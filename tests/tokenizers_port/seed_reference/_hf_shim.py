"""The transformers-4 `PreTrainedModel` surface the vendored LAVIS Q-Former uses, on a plain
nn.Module: transformers 5 dropped get_head_mask / invert_attention_mask and changed how
`init_weights` and loading work. Nothing here changes the forward computation."""

import torch
from torch import nn


class PreTrainedModel(nn.Module):
  config_class = None
  base_model_prefix = ""

  def __init__(self, config, *args, **kwargs):
    super().__init__()
    self.config = config

  def init_weights(self):
    self.apply(self._init_weights)

  def _init_weights(self, module):
    pass

  @property
  def dtype(self) -> torch.dtype:
    return next(self.parameters()).dtype

  def get_head_mask(self, head_mask, num_hidden_layers):
    assert head_mask is None, "head masks are not used by the SEED tokenizer"
    return [None] * num_hidden_layers

  def invert_attention_mask(self, encoder_attention_mask):
    # transformers 4.x: 1 -> 0, 0 -> the dtype's most negative value.
    if encoder_attention_mask.dim() == 3:
      ext = encoder_attention_mask[:, None, :, :]
    else:
      ext = encoder_attention_mask[:, None, None, :]
    ext = ext.to(dtype=self.dtype)
    return (1.0 - ext) * torch.finfo(self.dtype).min


def find_pruneable_heads_and_indices(*args, **kwargs):
  raise NotImplementedError("head pruning is not used by the SEED tokenizer")
