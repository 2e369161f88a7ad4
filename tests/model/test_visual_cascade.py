"""UniCode²'s visual-codebook cascade (mio_jax/model/visual_cascade.py) against numpy written from
the definitions: embeddings, the tied head, the loss, a train step, decoding, sharding, checkpoints."""

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from mio_jax.model.transformer import ModelConfig, Transformer
from mio_jax.model.visual_cascade import codebook_rows
from mio_jax.train.state import TrainState, init_opt_state, init_params, make_optimizer
from mio_jax.train.step import make_train_step, token_losses

K, D, HIDDEN, BASE = 24, 12, 16, 20  # image ids 20..43 of 64; D != embed, so shapes tell tables apart
SIZES = dict(vocab_size=64, embed_dim=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8, mlp_dim=64,
             dtype="float32", remat_policy="none")
OPT = ml_collections.ConfigDict(dict(peak_lr=1e-2, warmup_fraction=0.0, final_lr_fraction=1.0, b1=0.9,
                                     b2=0.95, eps=1e-8, weight_decay=0.1, clip_norm=1.0,
                                     schedule="constant", decay_fraction=0.0))
RANGES = {"text": (0, BASE), "image": (BASE, BASE + K), "speech": (BASE + K, 64)}


@pytest.fixture(scope="module")
def centroids(tmp_path_factory):
  """Centroids with a scale and offset of their own (the projector must not depend on them)."""
  c = (5.0 * np.random.default_rng(0).standard_normal((K, D)) + 1.0).astype(np.float32)
  path = str(tmp_path_factory.mktemp("codebook") / "centroids.npy")
  np.save(path, c)
  return path, c


def config(path, embedding="cascade", head="separate", **kw):
  return ModelConfig(**SIZES, image_embedding=embedding, image_codebook=path, image_code_dim=D,
                     image_projector_dim=HIDDEN, image_head=head, image_base=BASE, image_codes=K, **kw)


@pytest.mark.parametrize("change,match", [
    (dict(image_embedding="cascad"), r"^config.model.image_embedding='cascad' is not one of table, frozen, "),
    (dict(image_head="tied", image_codes=0), r"^config.model.image_embedding='cascade' with image_head='tied' "
                                             r"needs the vocabulary's image ids, but it has none"),
    (dict(image_code_dim=0), r"^config.model.image_code_dim=0 must be the centroids' width"),
])
def test_a_model_that_cannot_be_built_says_which_key(centroids, change, match):
  """The same one-line errors as validate (one check, mio_jax/model/visual_cascade.py), for a
  ModelConfig built by hand rather than by a validated training config."""
  from mio_jax.config.keys import ConfigError
  with pytest.raises(ConfigError, match=match):
    nnx.eval_shape(lambda: Transformer(dataclasses.replace(config(centroids[0]), **change), rngs=nnx.Rngs(0)))


def fsdp4_tensor2_mesh():
  from mio_jax.parallel.mesh import make_mesh
  return make_mesh(ml_collections.ConfigDict(dict(ici=dict(data=1, fsdp=4, tensor=2), dcn=dict(data=1),
                                                  processes_per_node=0)))


def trained_looking(params, seed=1):
  """Params with the zero-initialised residual made non-zero, so every term is seen."""
  params = jax.tree.map(np.asarray, params)
  if "residual" in params.get("visual", {}):
    params["visual"]["residual"] = np.random.default_rng(seed).standard_normal(
        params["visual"]["residual"].shape).astype(np.float32)
  return params


def model_with(cfg, params):
  graphdef = nnx.split(nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0))))[0]
  return nnx.merge(graphdef, jax.tree.map(jnp.asarray, params))


def gelu(x):  # jax.nn.gelu's default, the tanh approximation
  return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def effective_rows(params, mode, c):
  """E_eff [K, embed] from the definitions, float64."""
  c = c.astype(np.float64)
  n = c / np.sqrt(np.mean(c * c, axis=-1, keepdims=True) + 1e-6)
  v = {k: np.asarray(a, np.float64) for k, a in params["visual"].items()}
  if mode == "frozen":
    return n @ v["proj"]
  return gelu(n @ v["proj_in"]) @ v["proj_out"] + v["residual"][:K]


def ids_of_every_kind():
  return jnp.asarray([[0, 5, BASE - 1, BASE, BASE + 7, BASE + K - 1, BASE + K, 63]], jnp.int32)


@pytest.mark.parametrize("mode", ["frozen", "cascade"])
def test_image_ids_embed_through_the_frozen_codebook(centroids, mode):
  path, c = centroids
  cfg = config(path, mode)
  params = trained_looking(init_params(cfg, 0))
  np.testing.assert_array_equal(params["visual"]["frozen_codebook"][:K], c)  # read from the file
  assert not params["visual"]["frozen_codebook"][K:].any()  # the padding rows
  x = np.asarray(model_with(cfg, params).embed_ids(ids_of_every_kind()))[0]
  eff, table = effective_rows(params, mode, c), params["embed"]["table"]
  assert table.shape == (64 - K, 32)  # no image rows: the cascade serves them
  for i, tok in enumerate(np.asarray(ids_of_every_kind())[0]):
    if tok < BASE:
      expected = table[tok]
    elif tok < BASE + K:
      expected = eff[tok - BASE]
    else:  # speech ids follow the image block: their rows move down by K
      expected = table[tok - K]
    np.testing.assert_allclose(x[i], expected, rtol=1e-5, atol=1e-5, err_msg=f"id {tok}")


def test_table_mode_is_the_plain_model(centroids):
  """Default "table": today's parameter tree and logits, whatever the vocabulary's image range."""
  from mio_jax.export.mapping import PARAM_MAP

  plain = ModelConfig(**SIZES)
  with_range = dataclasses.replace(plain, image_base=BASE, image_codes=K, image_codebook=centroids[0])
  a, b = init_params(plain, 3), init_params(with_range, 3)
  names = sorted("/".join(str(k.key) for k in path) for path, _ in jax.tree_util.tree_flatten_with_path(a)[0])
  assert names == sorted(e.ours for e in PARAM_MAP)  # the export's names: no visual/*
  assert jax.tree.all(jax.tree.map(np.array_equal, a, b))
  ids = jnp.asarray(np.random.default_rng(0).integers(0, 64, (2, 10)), jnp.int32)
  seg, pos = jnp.ones_like(ids), jnp.broadcast_to(jnp.arange(10), ids.shape)
  np.testing.assert_array_equal(model_with(plain, a)(ids, seg, pos), model_with(with_range, b)(ids, seg, pos))
  np.testing.assert_array_equal(model_with(plain, a).head_kernel(), a["lm_head"])


@pytest.mark.parametrize("mode", ["table", "cascade"])
def test_tied_head_scores_image_ids_with_their_embeddings(centroids, mode):
  path, c = centroids
  cfg = config(path, mode, "tied")
  params = trained_looking(init_params(cfg, 0))
  model = model_with(cfg, params)
  ids = jnp.asarray(np.random.default_rng(2).integers(0, 64, (2, 9)), jnp.int32)
  seg, pos = jnp.ones_like(ids), jnp.broadcast_to(jnp.arange(9), ids.shape)
  with jax.default_matmul_precision("highest"):
    hidden = np.asarray(model.hidden_states(ids, seg, pos), np.float64)
    logits = np.asarray(model(ids, seg, pos))
  head = np.asarray(params["lm_head"], np.float64)
  assert head.shape == (32, 64 - K)  # no image columns: nothing K x embed is trained twice
  if mode == "table":
    eff = np.asarray(params["embed"]["table"][BASE:BASE + K], np.float64)
  else:
    eff = effective_rows(params, mode, c)
  np.testing.assert_allclose(logits[..., BASE:BASE + K], hidden @ eff.T, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(logits[..., :BASE], hidden @ head[:, :BASE], rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(logits[..., BASE + K:], hidden @ head[:, BASE:], rtol=1e-4, atol=1e-4)


@pytest.mark.slow  # compiles a step or a mesh (4-7 s on 2 cores); the embedding and head oracles stay
def test_chunked_loss_equals_plain_loss_with_the_tied_cascade(centroids):
  cfg = config(centroids[0], "cascade", "tied")
  params = trained_looking(init_params(cfg, 0))
  rng = np.random.default_rng(4)
  batch = {"inputs": jnp.asarray(rng.integers(0, 64, (2, 11)), jnp.int32),
           "targets": jnp.asarray(rng.integers(0, 64, (2, 11)), jnp.int32),
           "segment_ids": jnp.ones((2, 11), jnp.int32),
           "positions": jnp.broadcast_to(jnp.arange(11), (2, 11))}

  @jax.jit
  def loss_and_grads(p):
    loss = lambda c, p: jnp.sum(token_losses(model_with(c, p), batch, z_loss=1e-3)[0])
    chunked = dataclasses.replace(cfg, loss_chunk=4)  # 11 tokens: 3 chunks, the last padded
    return jax.value_and_grad(loss, argnums=1)(cfg, p), jax.value_and_grad(loss, argnums=1)(chunked, p)

  (plain_value, plain_grad), (value, grad) = loss_and_grads(params)
  np.testing.assert_allclose(value, plain_value, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(grad), jax.tree.leaves(plain_grad)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  assert not np.asarray(plain_grad["visual"]["frozen_codebook"]).any()  # stop_gradient
  assert np.abs(plain_grad["visual"]["residual"]).max() > 0


@pytest.mark.slow  # compiles a step or a mesh (4-7 s on 2 cores); the embedding and head oracles stay
def test_train_step_leaves_the_frozen_codebook_out_of_the_optimizer(centroids):
  from mio_jax.train.synthetic_batches import synthetic_row

  cfg = config(centroids[0], "cascade", "tied")
  graphdef = nnx.split(nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0))))[0]
  params = init_params(cfg, 0)
  tx, schedule = make_optimizer(OPT, 10)
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=init_opt_state(tx, params))
  frozen_shape = (codebook_rows(K), D)
  shapes = [x.shape for x in jax.tree.leaves(state.opt_state)]
  assert frozen_shape not in shapes  # no Adam moments of the frozen codebook
  assert shapes.count((codebook_rows(K), 32)) == 2  # the residual's two moments
  rows = [synthetic_row(7, 0, r, 16, 64) for r in range(4)]
  batch = {k: jnp.asarray(np.stack([r[k] for r in rows])) for k in rows[0]}
  assert ((batch["inputs"] >= BASE) & (batch["inputs"] < BASE + K)).any()
  step = jax.jit(make_train_step(graphdef, tx, schedule, modality_ranges=RANGES))
  new, metrics = step(*step(state, batch)[:1], batch)  # two steps: the first one's learning rate is 0
  new = jax.tree.map(np.asarray, new)
  np.testing.assert_array_equal(new.params["visual"]["frozen_codebook"], params["visual"]["frozen_codebook"])
  for name in ("proj_in", "proj_out", "residual"):
    assert not np.array_equal(new.params["visual"][name], params["visual"][name]), name
  assert not np.array_equal(new.params["lm_head"], params["lm_head"])
  assert np.isfinite(metrics["loss"]) and metrics["tokens_image"] > 0
  assert jax.tree.structure(new.opt_state) == jax.tree.structure(state.opt_state)


@pytest.mark.slow  # compiles a step or a mesh (4-7 s on 2 cores); the embedding and head oracles stay
def test_cached_decoding_with_the_tied_cascade_equals_full_forward(centroids):
  from mio_jax.generate.decode import init_cache

  cfg = config(centroids[0], "cascade", "tied")
  model = model_with(cfg, trained_looking(init_params(cfg, 0)))
  seq = np.asarray([1, BASE + 3, BASE + 9, 50, BASE, 7, BASE + K - 1, 60])
  ids = jnp.asarray(seq, jnp.int32)[None]
  full = model(ids, jnp.ones_like(ids), jnp.arange(len(seq))[None])[0]
  decode = jax.jit(lambda m, t, p, c: m.decode(t, jnp.ones_like(t), p, c))
  logits, cache = decode(model, ids[:, :4], jnp.arange(4)[None], init_cache(cfg, 1, 10))
  assert cache["head"].shape == (32, 64)  # the tied kernel, computed once at prefill
  np.testing.assert_allclose(logits[0], full[:4], atol=1e-5)
  for i in range(4, len(seq)):
    logits, cache = decode(model, ids[:, i:i + 1], jnp.asarray([[i]]), cache)
    np.testing.assert_allclose(logits[0, 0], full[i], atol=1e-5)


@pytest.mark.slow  # a beam-search compile; cached decoding above stays
def test_beam_search_runs_with_the_cached_tied_head(centroids):
  from mio_jax.generate.beam import beam_search

  cfg = config(centroids[0], "cascade", "tied")
  model = model_with(cfg, trained_looking(init_params(cfg, 0)))
  out, scores = beam_search(model, [1, BASE + 3, 9], num_beams=2, max_new_tokens=3)
  assert out.shape == (3,) and np.isfinite(np.asarray(scores)).all()


@pytest.mark.slow  # compiles a step or a mesh (4-7 s on 2 cores); the embedding and head oracles stay
def test_codebook_is_split_over_fsdp_loaded_and_restored_bit_equal(centroids, tmp_path):
  from run_helpers import save_our_checkpoint

  from mio_jax.parallel.rules import get_rules
  from mio_jax.train.checkpoint import load_params
  from mio_jax.train.state import create_train_state

  path, c = centroids
  cfg = config(path, "cascade", "tied")
  mesh = fsdp4_tensor2_mesh()
  tx, _ = make_optimizer(OPT, 10)
  with jax.set_mesh(mesh):
    state, shardings, _ = create_train_state(cfg, tx, 0, mesh, get_rules("fsdp"))
  table = state.params["visual"]["frozen_codebook"]
  assert tuple(table.sharding.spec) == (None, "fsdp")  # never whole on a chip
  assert {s.data.shape for s in table.addressable_shards} == {(codebook_rows(K), D // 4)}
  assert tuple(state.params["visual"]["residual"].sharding.spec) == (None, "fsdp")
  np.testing.assert_array_equal(np.asarray(table)[:K], c)
  step_dir = save_our_checkpoint(str(tmp_path / "run"), state.params)
  restored = load_params(step_dir, state.params, shardings.params)
  np.testing.assert_array_equal(restored["visual"]["frozen_codebook"], np.asarray(table))
  assert restored["visual"]["frozen_codebook"].sharding == table.sharding


@pytest.mark.parametrize("embedding,head", [
    ("cascade", "tied"),  # drops both the table's image rows and the head's image columns
    pytest.param("frozen", "separate", marks=pytest.mark.slow),  # ~6 s of compiles each; one drop
    pytest.param("table", "tied", marks=pytest.mark.slow),
])
def test_a_table_checkpoint_starts_a_run_whose_image_ids_use_the_codebook(centroids, tmp_path, embedding,
                                                                         head):
  """MIO's layout (every id a table row and a head column, as an import writes it) as init_from of a
  run that reads image ids apart (mio_jax/train/table_init.py): what both models have is carried
  over bit for bit, the image rows (and with a tied head the image columns) are dropped, and the
  visual parameters are the run's own fresh init. The oracle is numpy slicing of the saved arrays."""
  from run_helpers import save_our_checkpoint

  from mio_jax.parallel.rules import get_rules
  from mio_jax.train.checkpoint import load_params
  from mio_jax.train.state import create_train_state

  path, _ = centroids
  table_cfg = config(path, "table", "separate")
  saved = trained_looking(init_params(table_cfg, seed=5))
  step_dir = save_our_checkpoint(str(tmp_path / "table_run"), saved)
  cfg = config(path, embedding, head)
  mesh = fsdp4_tensor2_mesh()
  tx, _ = make_optimizer(OPT, 10)
  with jax.set_mesh(mesh):
    state, shardings, _ = create_train_state(cfg, tx, 0, mesh, get_rules("fsdp"))
    got = load_params(step_dir, state.params, shardings.params, cfg)
  keep = np.r_[0:BASE, BASE + K:64]  # every id but the image ones
  want_table = saved["embed"]["table"][keep] if embedding != "table" else saved["embed"]["table"]
  want_head = saved["lm_head"][:, keep] if head == "tied" else saved["lm_head"]
  np.testing.assert_array_equal(np.asarray(got["embed"]["table"]), want_table)
  np.testing.assert_array_equal(np.asarray(got["lm_head"]), want_head)
  for name in ("blocks", "final_norm"):
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, got[name]), saved[name])
  if embedding != "table":  # fresh: the run's init, the centroids read from their file
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, got["visual"]),
                 jax.tree.map(np.asarray, state.params["visual"]))
  assert jax.tree.map(lambda a: a.sharding, got) == jax.tree.map(lambda a: a.sharding, state.params)


def test_a_table_checkpoint_of_another_vocabulary_is_refused_naming_the_parameter(centroids, tmp_path):
  from run_helpers import save_our_checkpoint

  from mio_jax.train.checkpoint import load_params

  path, _ = centroids
  other = dataclasses.replace(config(path, "table", "separate"), vocab_size=72)
  step_dir = save_our_checkpoint(str(tmp_path / "table_run"), init_params(other, seed=5))
  cfg = config(path, "cascade", "separate")
  params = init_params(cfg, seed=0)
  shardings = jax.tree.map(lambda a: jax.sharding.SingleDeviceSharding(jax.devices()[0]), params)
  with pytest.raises(ValueError, match=r"parameter embed/table has shape \(72, 32\); a table model of this "
                                       r"run's vocabulary has \(64, 32\)"):
    load_params(step_dir, params, shardings, cfg)
