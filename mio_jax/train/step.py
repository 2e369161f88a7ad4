"""The jitted training step: masked next-token loss (mio_jax/model/token_logprobs.py), per-modality losses, accumulation, AdamW.

`train_step(state, batch) -> (state, metrics)` is pure. Gradient accumulation splits the global
batch into `grad_accum_steps` micro-batches and scans over them, summing token-weighted losses so
the update equals the one on the whole batch. Frozen parameters (the visual codebook) are neither
differentiated nor updated: they come back bit-identical (mio_jax/model/visual_cascade.py).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from mio_jax.model.token_logprobs import cross_entropy
from mio_jax.model.visual_cascade import merge_frozen, split_frozen
from mio_jax.parallel.rules import constrain
from mio_jax.train.chunked_loss import chunked_token_losses
from mio_jax.train.state import TrainState

BATCH_KEYS = ("inputs", "targets", "segment_ids", "positions", "loss_mask")


def split_micro_batches(x: jax.Array, n: int) -> jax.Array:
  """[B, ...] -> [n, B / n, ...] where micro-batch a holds rows a, a + n, a + 2n, ...

  The batch's rows are split over devices in contiguous blocks; taking every n-th row gives every
  device its share of each micro-batch from the rows it already holds, so nothing moves between
  devices (contiguous micro-batches would sit on a few devices each).
  """
  y = x.reshape(x.shape[0] // n, n, *x.shape[1:]).swapaxes(0, 1)
  return constrain(y, (None, "batch", "length"))


def modality_masks(targets: jax.Array, ranges: dict[str, tuple[int, int]]) -> dict[str, jax.Array]:
  return {name: (targets >= lo) & (targets < hi) for name, (lo, hi) in ranges.items()}


def token_losses(model, batch: dict, z_loss: float = 0.0) -> tuple[jax.Array, jax.Array]:
  """Per-token loss (with z-loss) and negative log-likelihood [B, T] of a batch; the training step
  and the held-out evaluation (mio_jax/train/evaluation.py) both score tokens here."""
  if model.cfg.loss_chunk:  # logits a chunk at a time (mio_jax/train/chunked_loss.py)
    hidden = model.hidden_states(batch["inputs"], batch["segment_ids"], batch["positions"])
    hidden, kernel = model.head(hidden)  # the head's kernel: lm_head, or tied to the visual cascade
    return chunked_token_losses(hidden, kernel, batch["targets"], z_loss=z_loss,
                                chunk=model.cfg.loss_chunk, used_vocab=model.cfg.used_vocab_size)
  logits = model(batch["inputs"], batch["segment_ids"], batch["positions"])
  return cross_entropy(logits, batch["targets"], z_loss=z_loss)


def make_train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation, schedule: optax.Schedule,
                    *, modality_ranges: dict[str, tuple[int, int]], grad_accum_steps: int = 1,
                    z_loss: float = 0.0, skip_nonfinite: bool = False) -> Callable:
  """Build `train_step`. `modality_ranges` maps a name (text, image, speech) to its [lo, hi) ids.

  Metrics: `loss_<modality>` with `tokens_<modality>` (0 tokens: the modality was absent, its loss
  reads 0), and `finite` (1 when the loss and the gradient norm are finite). With `skip_nonfinite`,
  a step whose loss or gradients are not finite leaves params and optimizer state unchanged (as
  optax.apply_if_finite does, without changing the optimizer state's structure).
  """

  def summed_loss(trainable, frozen, batch):
    loss, nll = token_losses(nnx.merge(graphdef, merge_frozen(trainable, frozen)), batch, z_loss)
    mask = batch["loss_mask"].astype(jnp.float32)
    sums = {"loss": jnp.sum(nll * mask), "tokens": jnp.sum(mask)}
    for name, m in modality_masks(batch["targets"], modality_ranges).items():
      sums[f"loss_{name}"] = jnp.sum(nll * mask * m)
      sums[f"tokens_{name}"] = jnp.sum(mask * m)
    return jnp.sum(loss * mask), sums

  grad_fn = jax.value_and_grad(summed_loss, has_aux=True)

  def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    trainable, frozen = split_frozen(state.params)  # gradients and updates: the trainable only
    if grad_accum_steps == 1:
      (_, sums), grads = grad_fn(trainable, frozen, batch)
    else:
      micro = jax.tree.map(lambda x: split_micro_batches(x, grad_accum_steps), batch)

      def accumulate(carry, micro_batch):
        micro_batch = jax.tree.map(lambda x: constrain(x, ("batch", "length")), micro_batch)
        (_, sums), grads = grad_fn(trainable, frozen, micro_batch)
        return jax.tree.map(jnp.add, carry, (grads, sums)), None

      _, sums_shape = jax.eval_shape(grad_fn, trainable, frozen, jax.tree.map(lambda x: x[0], micro))[0]
      # The gradient carry is laid out like the params it sums into (zeros_like keeps their
      # sharding), not replicated: at 7B an unsharded carry alone would not fit a chip.
      zeros = (jax.tree.map(jnp.zeros_like, trainable),
               jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), sums_shape))
      (grads, sums), _ = jax.lax.scan(accumulate, zeros, micro)

    # Token-weighted mean over the whole global batch.
    tokens = jnp.maximum(sums["tokens"], 1.0)
    grads = jax.tree.map(lambda g: g / tokens, grads)
    updates, opt_state = tx.update(grads, state.opt_state, trainable)
    params = merge_frozen(optax.apply_updates(trainable, updates), frozen)
    loss, grad_norm = sums["loss"] / tokens, optax.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    if skip_nonfinite:
      keep = lambda new, old: jnp.where(finite, new, old)
      params = jax.tree.map(keep, params, state.params)
      opt_state = jax.tree.map(keep, opt_state, state.opt_state)
    metrics = {
        "loss": loss,
        "tokens": sums["tokens"],
        "grad_norm": grad_norm,
        "learning_rate": schedule(state.step),
        "finite": finite.astype(jnp.float32),
    }
    for name in modality_ranges:
      count = sums[f"tokens_{name}"]
      metrics[f"loss_{name}"] = sums[f"loss_{name}"] / jnp.maximum(count, 1.0)
      metrics[f"tokens_{name}"] = count
    new_state = TrainState(step=state.step + 1, params=params, opt_state=opt_state)
    return new_state, metrics

  return train_step
