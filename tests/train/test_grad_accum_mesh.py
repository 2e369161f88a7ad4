"""Gradient accumulation on an 8-device mesh (data 2 x fsdp 2 x tensor 2): the accumulated step
equals the one-batch step, and splitting the batch into micro-batches moves no rows between devices."""

import re

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

CFG = ModelConfig(vocab_size=64, embed_dim=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8,
                  mlp_dim=64, dtype="float32", remat_policy="none")
OPT = ml_collections.ConfigDict(dict(peak_lr=1e-3, warmup_fraction=0.0, final_lr_fraction=1.0, b1=0.9,
                                     b2=0.95, eps=1e-8, weight_decay=0.0, clip_norm=1e9,
                                     schedule="warmup_cosine", decay_fraction=0.0))
RANGES = {"text": (0, 32), "image": (32, 48), "speech": (48, 64)}


def _run(accum):
  mesh = Mesh(np.asarray(jax.devices()).reshape(2, 2, 2), ("data", "fsdp", "tensor"))  # as make_mesh
  rules = get_rules("fsdp")
  tx, schedule = make_optimizer(OPT, 10)
  rows = [synthetic_row(7, 0, r, 24, CFG.vocab_size) for r in range(16)]
  with jax.set_mesh(mesh), activation_sharding(mesh, rules):
    state, shardings, graphdef = create_train_state(CFG, tx, 0, mesh, rules)
    batch_sharding = NamedSharding(mesh, batch_spec())
    batch = {k: jax.device_put(np.stack([r[k] for r in rows]), batch_sharding) for k in rows[0]}
    step = jax.jit(make_train_step(graphdef, tx, schedule, modality_ranges=RANGES,
                                   grad_accum_steps=accum),
                   in_shardings=(shardings, batch_sharding), out_shardings=(shardings, None))
    compiled = step.lower(state, batch).compile()
    new_state, metrics = compiled(state, batch)
  return new_state, jax.device_get(metrics), compiled.as_text()


@pytest.fixture(scope="module")
def one_batch():
  return _run(1)


@pytest.mark.slow  # test_train_step's one-device accumulation stays
@pytest.mark.parametrize("accum", [2, 4])
def test_accumulated_step_on_a_mesh_equals_one_batch(one_batch, accum):
  (s1, m1, _), (s2, m2, hlo) = one_batch, _run(accum)
  np.testing.assert_allclose(m1["loss"], m2["loss"], rtol=1e-6)
  np.testing.assert_allclose(m1["grad_norm"], m2["grad_norm"], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s2.params)):
    assert a.sharding == b.sharding
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
  # Every-n-th-row micro-batches: each device already holds its share of every micro-batch, so the
  # split adds no all-to-all or collective-permute to those the one-batch step has (the layers'
  # sequence-parallel reshards have some; a contiguous split would add more).
  moves = lambda text: {op: len(re.findall(rf" {op}\(", text)) for op in ("all-to-all", "collective-permute")}
  assert moves(hlo) == moves(one_batch[2])
