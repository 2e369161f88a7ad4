"""The three timm helpers the vendored EVA / LAVIS ViT files import (timm is not a dependency).
Inference-only equivalents: drop path is the identity outside training."""

import collections.abc

import torch
from torch import nn
from torch.nn.init import trunc_normal_  # timm's has the same signature and defaults (a=-2, b=2)


def to_2tuple(x):
  return tuple(x) if isinstance(x, collections.abc.Iterable) else (x, x)


def drop_path(x, drop_prob: float = 0.0, training: bool = False):
  if drop_prob == 0.0 or not training:
    return x
  keep = 1 - drop_prob
  mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
  return x * mask / keep


class DropPath(nn.Module):
  def __init__(self, drop_prob=None):
    super().__init__()
    self.drop_prob = drop_prob or 0.0

  def forward(self, x):
    return drop_path(x, self.drop_prob, self.training)


__all__ = ["DropPath", "drop_path", "to_2tuple", "trunc_normal_", "torch"]
