"""Every rule set shards parameters (and their Adam moments) as intended, read off the real arrays."""

import jax
import ml_collections
import pytest
from jax.sharding import PartitionSpec as P

from mio_jax.model.transformer import ModelConfig
from mio_jax.parallel.mesh import make_mesh
from mio_jax.parallel.rules import get_rules, logical_to_spec
from mio_jax.train.state import create_train_state, make_optimizer

CFG = ModelConfig(vocab_size=96, embed_dim=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8,
                  mlp_dim=64, dtype="float32")
OPT = ml_collections.ConfigDict(dict(peak_lr=1e-3, warmup_fraction=0.1, final_lr_fraction=0.1, b1=0.9,
                                     b2=0.95, eps=1e-8, weight_decay=0.1, clip_norm=1.0,
                                     schedule="warmup_cosine", decay_fraction=0.0))

# Expected specs (stacked layer axis first for block params), with mesh data=2, fsdp=2, tensor=2.
EXPECTED = {
    "fsdp": {
        ("embed", "table"): P("tensor", "fsdp"),
        ("lm_head",): P("fsdp", "tensor"),
        ("blocks", "attn", "wq"): P(None, "fsdp", "tensor", None),
        ("blocks", "attn", "wk"): P(None, "fsdp", "tensor", None),
        ("blocks", "attn", "wo"): P(None, "tensor", None, "fsdp"),
        ("blocks", "mlp", "gate"): P(None, "fsdp", "tensor"),
        ("blocks", "mlp", "down"): P(None, "tensor", "fsdp"),
        ("blocks", "attn_norm", "scale"): P(None, None),
    },
    "tensor": {
        ("embed", "table"): P("tensor", None),
        ("lm_head",): P(None, "tensor"),
        ("blocks", "attn", "wq"): P(None, None, "tensor", None),
        ("blocks", "mlp", "down"): P(None, "tensor", None),
        ("blocks", "attn_norm", "scale"): P(None, None),
    },
    "data": {
        ("embed", "table"): P(None, None),
        ("blocks", "attn", "wq"): P(None, None, None, None),
        ("blocks", "mlp", "down"): P(None, None, None),
    },
}


def _get(tree, path):
  for key in path:
    tree = tree[key]
  return tree


def _normalise(spec, ndim):
  return tuple(spec) + (None,) * (ndim - len(spec))


# fsdp (the presets' rule set) runs by default; data and tensor compile the same optimizer again (~4 s
# each on 2 cores): slow set.
@pytest.mark.parametrize("rule_set", [pytest.param(r, marks=() if r == "fsdp" else pytest.mark.slow)
                                      for r in sorted(EXPECTED)])
def test_rule_set_shards_params_and_moments(rule_set):
  mesh = make_mesh(ml_collections.ConfigDict(dict(ici=dict(data=2, fsdp=2, tensor=2), dcn=dict(data=1),
                                                processes_per_node=0)))
  tx, _ = make_optimizer(OPT, total_steps=10)
  with jax.set_mesh(mesh):
    state, _, _ = create_train_state(CFG, tx, 0, mesh, get_rules(rule_set))
  adam = state.opt_state[1][0]  # chain(clip, adamw) -> adamw's ScaleByAdamState
  for path, spec in EXPECTED[rule_set].items():
    param = _get(state.params, path)
    assert _normalise(param.sharding.spec, param.ndim) == _normalise(spec, param.ndim), path
    for moment in (adam.mu, adam.nu):
      m = _get(moment, path)
      assert m.sharding.spec == param.sharding.spec, (path, "moment")
    # The data really is split: each device holds 1/(product of sharded axes) of the tensor.
    shard = param.addressable_shards[0].data
    split = 1
    for axes in spec:
      for a in (axes,) if isinstance(axes, str) else (axes or ()):
        split *= mesh.shape[a]
    assert shard.size * split == param.size, path


def test_an_axis_is_never_used_twice_in_one_spec():
  rules = (("a", "fsdp"), ("b", "fsdp"), ("c", ("data", "fsdp")))
  assert logical_to_spec(("a", "b"), rules) == P("fsdp", None)
  assert logical_to_spec(("c", "a"), rules) == P(("data", "fsdp"), None)


def test_unknown_rule_set_names_the_key():
  with pytest.raises(ValueError, match=r"config.sharding.rules='zero'"):
    get_rules("zero")
