"""Fewer KV heads than tensor shards (MIO-7B: 4 KV heads, tensor 8): each KV head is repeated so every
shard holds whole heads, and its weights stay replicated over tensor. Oracle: the same step with no
mesh at all (no repetition, no sharding).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from configs.base import stage_config
from mio_jax.model.transformer import ModelConfig, Transformer
from mio_jax.parallel.rules import activation_sharding, batch_spec, get_rules, kv_head_repeats
from mio_jax.train.state import TrainState, model_graphdef_and_axes, state_shardings
from mio_jax.train.step import make_train_step
from mio_jax.train.synthetic_batches import synthetic_row
from mio_jax.train.validate import validate

CFG = ModelConfig(vocab_size=64, embed_dim=32, num_layers=2, num_heads=8, num_kv_heads=2, head_dim=8,
                  mlp_dim=64, dtype="float32", remat_policy="none")


def _step(mesh):
  graphdef, _, axes = model_graphdef_and_axes(CFG)
  params = nnx.to_pure_dict(nnx.state(Transformer(CFG, rngs=nnx.Rngs(1)), nnx.Param))
  tx = optax.sgd(1.0)
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))
  rows = [synthetic_row(5, 0, r, 16, 64) for r in range(8)]
  batch = {k: jnp.asarray(np.stack([o[k] for o in rows])) for k in rows[0]}
  step = make_train_step(graphdef, tx, lambda s: 1.0, modality_ranges={"text": (0, 64)})
  if mesh is None:
    new, metrics = jax.jit(step)(state, batch)
    return metrics, new.params, None
  rules = get_rules("fsdp")
  shardings = state_shardings(mesh, rules, axes, tx, jax.eval_shape(lambda: state))
  batch_sh = NamedSharding(mesh, batch_spec())
  with jax.set_mesh(mesh), activation_sharding(mesh, rules):
    assert kv_head_repeats(CFG.num_kv_heads) == 4
    new, metrics = jax.jit(step, in_shardings=(shardings, batch_sh), out_shardings=(shardings, None))(
        jax.device_put(state, shardings), jax.device_put(batch, batch_sh))
  return metrics, new.params, shardings


@pytest.mark.slow  # a tensor-8 step
def test_tensor_8_with_2_kv_heads_equals_the_unsharded_step():
  mesh = Mesh(np.array(jax.devices()).reshape(1, 1, 8), ("data", "fsdp", "tensor"))
  with jax.default_matmul_precision("highest"):
    m_ref, p_ref, _ = _step(None)
    m, p, shardings = _step(mesh)
  # [layers, embed, heads, head_dim]: 2 KV heads stay whole on tensor 8, the 8 query heads split
  assert shardings.params["blocks"]["attn"]["wk"].spec[2] is None
  assert shardings.params["blocks"]["attn"]["wq"].spec[2] == "tensor"
  for key in ("loss", "grad_norm"):
    np.testing.assert_allclose(m[key], m_ref[key], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(p_ref), jax.tree.leaves(p)):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)


def test_mio_7b_validates_for_tensor_4_and_8():
  for tensor in (4, 8):
    c = stage_config(2)
    c.mesh.ici.update(fsdp=-1, tensor=tensor)
    assert validate(c, jax.devices())["tensor"] == tensor
