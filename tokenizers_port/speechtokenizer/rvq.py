"""Residual vector quantizer: plain Euclidean nearest code per layer, residual subtracted.

The distance is written as the reference writes it (|x|^2 - 2 x.e + |e|^2) so float32 rounding,
and with it the rare near-tie, falls the same way.
"""

import jax
import jax.numpy as jnp
from flax import nnx

HIGHEST = jax.lax.Precision.HIGHEST


class ResidualVQ(nnx.Module):
  """codebooks [n_q, codebook_size, dim]."""

  def __init__(self, n_q: int, codebook_size: int, dim: int):
    self.codebooks = nnx.Param(jnp.zeros((n_q, codebook_size, dim), jnp.float32))

  def encode(self, x, n_q: int):
    """[B, T, D] features -> int32 codes [n_q, B, T]."""
    books = self.codebooks[...][:n_q]
    norms = jnp.sum(books * books, axis=-1)  # [n_q, K]

    def layer(residual, book_and_norm):
      book, norm = book_and_norm
      x2 = jnp.sum(residual * residual, axis=-1, keepdims=True)
      dist = x2 - 2 * jnp.einsum("btd,kd->btk", residual, book, precision=HIGHEST) + norm
      idx = jnp.argmin(dist, axis=-1).astype(jnp.int32)
      return residual - jnp.take(book, idx, axis=0), idx

    _, codes = jax.lax.scan(layer, x, (books, norms))
    return codes

  def decode(self, codes):
    """int codes [n_q, B, T] -> summed code vectors [B, T, D]."""
    books = self.codebooks[...][:codes.shape[0]]
    vecs = jax.vmap(lambda book, idx: jnp.take(book, idx, axis=0))(books, codes)
    return jnp.sum(vecs, axis=0)
