"""Sequence parallelism of the residual stream: on a tensor axis, the residual between blocks is split
on its length (rules.py, "residual_length"). The step's numbers are those of one device, and the
residuals the scan saves for the backward take a tensor-th of the memory."""


import jax
import ml_collections
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding

from mio_jax.model.transformer import ModelConfig
from mio_jax.parallel.rules import activation_sharding, batch_spec, get_rules
from mio_jax.train.state import create_train_state, make_optimizer
from mio_jax.train.step import make_train_step
from mio_jax.train.synthetic_batches import synthetic_row

CFG = ModelConfig(vocab_size=64, embed_dim=32, num_layers=8, num_heads=4, num_kv_heads=4, head_dim=8,
                  mlp_dim=64, dtype="float32", remat_policy="full")
OPT = ml_collections.ConfigDict(dict(peak_lr=1e-3, warmup_fraction=0.0, final_lr_fraction=1.0, b1=0.9,
                                     b2=0.95, eps=1e-8, weight_decay=0.0, clip_norm=1e9,
                                     schedule="warmup_cosine", decay_fraction=0.0))
RANGES = {"text": (0, 64)}
ROWS, LENGTH = 4, 256


def _step(shape, rules):
  """(metrics, params, temp bytes per device) of one train step on a data x fsdp x tensor mesh."""
  devices = np.asarray(jax.devices()[:int(np.prod(shape))]).reshape(shape)
  mesh = Mesh(devices, ("data", "fsdp", "tensor"))
  tx, schedule = make_optimizer(OPT, 10)
  rows = [synthetic_row(3, 0, r, LENGTH, CFG.vocab_size) for r in range(ROWS)]
  with jax.set_mesh(mesh), activation_sharding(mesh, rules):
    state, shardings, graphdef = create_train_state(CFG, tx, 0, mesh, rules)
    batch_sharding = NamedSharding(mesh, batch_spec())
    batch = {k: jax.device_put(np.stack([r[k] for r in rows]), batch_sharding) for k in rows[0]}
    step = jax.jit(make_train_step(graphdef, tx, schedule, modality_ranges=RANGES),
                   in_shardings=(shardings, batch_sharding), out_shardings=(shardings, None))
    compiled = step.lower(state, batch).compile()
    new_state, metrics = compiled(state, batch)
  return jax.device_get(metrics), new_state.params, compiled.memory_analysis().temp_size_in_bytes


@pytest.mark.slow  # a tensor-4 step against one device
def test_sequence_parallel_step_equals_one_device_and_saves_residual_memory():
  rules = get_rules("fsdp")
  whole_rows = tuple((n, None if n == "residual_length" else a) for n, a in rules)
  one, one_params, _ = _step((1, 1, 1), rules)
  split, split_params, split_temp = _step((1, 1, 4), rules)
  _, _, whole_temp = _step((1, 1, 4), whole_rows)
  np.testing.assert_allclose(split["loss"], one["loss"], rtol=1e-6)
  np.testing.assert_allclose(split["grad_norm"], one["grad_norm"], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(split_params), jax.tree.leaves(one_params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
  # Saved residuals: 8 layers x 4 rows x 256 x 32 float32 = 1 MiB per device whole, 1/4 of it split.
  saved = CFG.num_layers * ROWS * LENGTH * CFG.embed_dim * 4
  assert whole_temp - split_temp >= 0.5 * saved * 3 / 4, (whole_temp, split_temp, saved)
