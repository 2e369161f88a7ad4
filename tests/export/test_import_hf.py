"""Import: a transformers-made Llama checkpoint -> our orbax checkpoint (vocabulary extended)."""

import json
import os

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from export_helpers import (TINY, TINY_VOCAB, assert_logits_match, hf_logits, launch_module, load_hf_model,
                            make_hf_checkpoint, our_logits, read_params)
from mio_jax.export.from_hf import import_hf
from mio_jax.export.safetensors_io import Reader
from mio_jax.export.to_hf import export
from mio_jax.train.checkpoint import load_params
from mio_jax.train.state import model_graphdef_and_axes


@pytest.fixture(scope="module")
def hf_full(tmp_path_factory):
  """A transformers checkpoint already at the full tiny vocabulary (no rows to add)."""
  return make_hf_checkpoint(tmp_path_factory.mktemp("hf_full"), vocab_size=TINY.vocab_size)


def test_imported_logits_match_transformers_and_init_from_loads(hf_full, tmp_path):
  out = str(tmp_path / "imported")
  summary = import_hf(hf_full, out, vocab_cfg=TINY_VOCAB)
  assert summary["new_rows"] == 0 and summary["vocab_size"] == TINY.vocab_size
  # config.init_from accepts it: the train loop's own loader, into a sharded layout.
  _, shapes, _ = model_graphdef_and_axes(TINY)
  mesh = jax.make_mesh((jax.device_count(),), ("fsdp",))
  shardings = jax.tree.map(lambda _: jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()), shapes)
  params = jax.tree.map(np.asarray, load_params(out, shapes, shardings))
  assert_logits_match(params, TINY, load_hf_model(hf_full), np.random.default_rng(0))


def test_export_of_import_reproduces_tensors_exactly(hf_full, tmp_path):
  out = str(tmp_path / "imported")
  layout = tmp_path / "layout.json"
  layout.write_text(json.dumps(TINY_VOCAB))
  launch_module("import_hf").main(["--hf", hf_full, "--out", out, "--vocab-config", str(layout)])
  again = str(tmp_path / "exported")
  export(out, again)  # model_config.json and tokenizer.model come from the import
  original, exported = Reader(hf_full), Reader(again)
  assert original.names() == exported.names()
  for name in original.names():
    a, b = original.get(name), exported.get(name)
    assert a.dtype == b.dtype and a.shape == b.shape, name
    np.testing.assert_array_equal(a, b, err_msg=name)


def test_text_checkpoint_grows_to_multimodal_vocabulary(tmp_path):
  """Tied 1000-id text model: text rows kept exactly, new rows near the mean, text logits unchanged."""
  hf = make_hf_checkpoint(tmp_path / "hf_text", vocab_size=1000, tie=True, seed=1)
  out = str(tmp_path / "imported")
  summary = import_hf(hf, out, vocab_cfg=TINY_VOCAB, noise=0.01, seed=3)
  assert summary["new_rows"] == TINY.vocab_size - 1000
  params = read_params(out)
  embed = load_file(os.path.join(hf, "model.safetensors"))["model.embed_tokens.weight"]
  np.testing.assert_array_equal(params["embed"]["table"][:1000], embed)
  np.testing.assert_array_equal(params["lm_head"][:, :1000], embed.T)  # tied head
  new = params["embed"]["table"][1000:]
  np.testing.assert_allclose(new.mean(0), embed.mean(0), atol=0.01 * embed.std(0).max())
  spread = new.std(0) / embed.std(0)
  assert np.all((spread > 0.005) & (spread < 0.02))  # noise is 0.01 x the per-dim std
  ids = np.random.default_rng(4).integers(0, 1000, (1, 12)).astype(np.int32)
  ours = our_logits(params, TINY, ids, np.ones_like(ids), np.arange(12, dtype=np.int32)[None])
  np.testing.assert_allclose(ours[..., :1000], hf_logits(load_hf_model(hf), ids), atol=1e-4, rtol=0)
  with open(os.path.join(out, "model_config.json")) as f:
    assert json.load(f)["vocab"]["text_size"] == 1000


def test_partial_or_foreign_checkpoint_names_the_tensor(hf_full, tmp_path):
  tensors = load_file(os.path.join(hf_full, "model.safetensors"))
  partial = tmp_path / "partial"
  partial.mkdir()
  for name in ("config.json",):
    (partial / name).write_text((open(os.path.join(hf_full, name)).read()))
  save_file({k: v for k, v in tensors.items() if k != "model.layers.1.mlp.up_proj.weight"},
            str(partial / "model.safetensors"), metadata={"format": "pt"})
  with pytest.raises(KeyError, match=r"model.layers.1.mlp.up_proj.weight is missing"):
    import_hf(str(partial), str(tmp_path / "out1"), vocab_cfg=TINY_VOCAB)
  with pytest.raises(SystemExit, match=r"import failed: .*up_proj.weight is missing"):
    launch_module("import_hf").main(["--hf", str(partial), "--out", str(tmp_path / "out1")])
  save_file({**tensors, "model.layers.0.self_attn.q_proj.bias": np.zeros(64, np.float32)},
            str(partial / "model.safetensors"), metadata={"format": "pt"})
  with pytest.raises(ValueError, match=r"q_proj.bias"):
    import_hf(str(partial), str(tmp_path / "out2"), vocab_cfg=TINY_VOCAB)
  import_hf(hf_full, str(tmp_path / "ok"), vocab_cfg=TINY_VOCAB)
  with pytest.raises(ValueError, match="already holds checkpoints"):
    import_hf(hf_full, str(tmp_path / "ok"), vocab_cfg=TINY_VOCAB)
  with pytest.raises(ValueError, match="has 13294 ids, more than the 5614"):
    import_hf(hf_full, str(tmp_path / "out3"), vocab_cfg=dict(TINY_VOCAB, image_codes=512))
