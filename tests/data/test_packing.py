"""Packing: row invariants, no attention across samples (through the model), caps, over-long policy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mio_jax.data import packing, pipeline
from mio_jax.data.templates import build_tokens, TemplateOptions
from mio_jax.train.code_order import training_vocab
import synthetic_shards


@pytest.fixture(scope="module")
def text_model(tmp_path_factory):
  return synthetic_shards.tiny_text_model(str(tmp_path_factory.mktemp("sp")))


def _rows(cfg, vocab, num_epochs=1):
  examples = pipeline.build_examples(cfg.data, vocab, num_epochs=num_epochs)
  ds = packing.pack(examples.to_iter_dataset(), seq_len=cfg.data.seq_len,
                    packing_bins=cfg.data.packing_bins,
                    max_segments_per_row=cfg.data.max_segments_per_row)
  return list(ds)


def _image_text_config(tmp_path, text_model, n=40, **data):
  rng = np.random.default_rng(0)
  (tmp_path / "pairs").mkdir()
  synthetic_shards.write_samples(str(tmp_path / "pairs" / "a.array_record"),
                          [synthetic_shards.uid_image_sample(u, rng) for u in range(n)])
  return synthetic_shards.pipeline_config(str(tmp_path), text_model, {"pairs": 1}, **data)


def test_row_invariants(tmp_path, text_model):
  cfg = _image_text_config(tmp_path, text_model, seq_len=128)
  vocab = training_vocab(cfg)
  rows = _rows(cfg, vocab)
  uids = []
  for row in rows:
    seg, pos, inp, tgt, mask = (row[k] for k in ("segment_ids", "positions", "inputs", "targets",
                                                 "loss_mask"))
    assert seg.shape == (128,) and mask.dtype == np.float32
    pad = seg == 0
    assert not inp[pad].any() and not mask[pad].any() and not pos[pad].any()
    segments = packing.row_segments(seg)
    assert sum(len(s) for s in segments) == (~pad).sum()  # segments numbered 1..n, no gaps
    for idx in segments:
      assert (np.diff(idx) == 1).all()  # contiguous
      np.testing.assert_array_equal(pos[idx], np.arange(len(idx)))  # positions restart
      np.testing.assert_array_equal(tgt[idx[:-1]], inp[idx[1:]])  # targets within the sample
      assert mask[idx[-1]] == 0 and mask[idx[:-1]].all()  # no target across samples
      tokens = inp[idx]
      assert tokens[0] == vocab.bos and tokens[-1] == vocab.eos
      start = int(np.flatnonzero(tokens == vocab.image_start)[0])
      codes = tokens[start + 1:start + 17] - vocab.image_base
      assert (codes == codes[0]).all()
      uids.append(int(codes[0]))
  assert sorted(uids) == list(range(40))  # one epoch: nothing lost, nothing duplicated
  assert int(sum(r["stats"][0] for r in rows)) == 40


def _causal_lm_logits(ids, segment_ids, positions, vocab_size):
  """Logits of the lead's Transformer if present, else embeddings -> one attention layer."""
  try:
    from flax import nnx
    from mio_jax.model.transformer import ModelConfig, Transformer
    mc = ModelConfig(vocab_size=vocab_size, embed_dim=32, num_layers=2, num_heads=4,
                     num_kv_heads=2, head_dim=8, mlp_dim=64, dtype="float32", remat_policy="none")
    model = Transformer(mc, rngs=nnx.Rngs(0))
    forward = nnx.jit(lambda m, *args: m(*args))
    return np.asarray(forward(model, jnp.asarray(ids), jnp.asarray(segment_ids),
                              jnp.asarray(positions)))
  except ImportError:
    from mio_jax.model.attention import attention
    k = jax.random.split(jax.random.key(0), 4)
    emb = jax.random.normal(k[0], (vocab_size, 32))
    wq, wk, wv = (jax.random.normal(kk, (32, 4, 8)) for kk in k[1:])
    x = emb[ids]
    q, kk, v = (jnp.einsum("bte,ehd->bthd", x, w) for w in (wq, wk, wv))
    out = attention(q, kk, v, jnp.asarray(segment_ids), causal=True, impl="xla")
    return np.asarray(out.reshape(*ids.shape, 32) @ emb.T)


def test_no_attention_across_samples(tmp_path, text_model):
  cfg = _image_text_config(tmp_path, text_model, seq_len=256)
  vocab = training_vocab(cfg)
  row = next(r for r in _rows(cfg, vocab) if r["segment_ids"].max() >= 3)
  seg = row["segment_ids"][None]
  pos = row["positions"][None]
  ids = row["inputs"][None].copy()
  base = _causal_lm_logits(ids, seg, pos, vocab.size)
  changed = ids.copy()
  a = seg == 2  # sample A sits between samples 1 and 3
  changed[a] = (changed[a] + 7) % vocab.size
  out = _causal_lm_logits(changed, seg, pos, vocab.size)
  others = (seg != 2) & (seg != 0)
  np.testing.assert_allclose(out[others], base[others], rtol=0, atol=1e-5)  # B's logits unchanged
  assert np.abs(out[a] - base[a]).max() > 1e-3  # while A's own logits do change


def test_segment_cap(tmp_path, text_model):
  (tmp_path / "text").mkdir()
  synthetic_shards.write_shards(str(tmp_path / "text"), "text", num_samples=60, num_shards=1)
  cfg = synthetic_shards.pipeline_config(str(tmp_path), text_model, {"text": 1}, seq_len=256,
                                  max_segments_per_row=3)
  rows = _rows(cfg, training_vocab(cfg))
  counts = [r["segment_ids"].max() for r in rows]
  assert max(counts) == 3 and sum(counts) == 60


@pytest.mark.parametrize("policy", ["drop", "truncate"])
def test_overlong_policy_is_counted(tmp_path, text_model, policy):
  (tmp_path / "text").mkdir()
  synthetic_shards.write_shards(str(tmp_path / "text"), "text", num_samples=50, num_shards=1)
  cfg = synthetic_shards.pipeline_config(str(tmp_path), text_model, {"text": 1}, seq_len=24,
                                  overlong=policy)
  vocab = training_vocab(cfg)
  from mio_jax.data.shards import ShardReader
  reader = ShardReader(str(tmp_path / "text" / "text-00000-of-00001.array_record"))
  lengths = [len(build_tokens(reader[i], vocab, None, TemplateOptions())[0]) for i in range(50)]
  expected_long = sum(n > 24 for n in lengths)
  assert 0 < expected_long < 50
  rows = _rows(cfg, vocab)
  stats = sum(r["stats"] for r in rows)
  seg_lengths = [len(s) for r in rows for s in packing.row_segments(r["segment_ids"])]
  names = packing.STAT_NAMES
  if policy == "drop":
    assert stats[1 + names.index("dropped_overlong")] == expected_long
    assert len(seg_lengths) == 50 - expected_long and max(seg_lengths) <= 24
  else:
    assert stats[1 + names.index("truncated")] == expected_long
    assert len(seg_lengths) == 50 and seg_lengths.count(24) >= expected_long
  assert stats[0] == len(seg_lengths)  # samples counted for the source = samples packed


def test_resume_mid_stream_with_drops(tmp_path, text_model):
  (tmp_path / "text").mkdir()
  synthetic_shards.write_shards(str(tmp_path / "text"), "text", num_samples=30, num_shards=1)
  cfg = synthetic_shards.pipeline_config(str(tmp_path), text_model, {"text": 1}, seq_len=24,
                                  overlong="drop")
  vocab = training_vocab(cfg)
  ds = packing.pack(pipeline.build_examples(cfg.data, vocab).to_iter_dataset(), seq_len=24,
                    packing_bins=2, max_segments_per_row=4)
  it = iter(ds)
  for _ in range(5):
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(12)]
  assert sum(r["stats"][1 + packing.STAT_NAMES.index("dropped_overlong")] for r in expected) > 0
  restored = iter(ds)
  restored.set_state(state)
  for e in expected:
    got = next(restored)
    for k in e:
      np.testing.assert_array_equal(got[k], e[k])
