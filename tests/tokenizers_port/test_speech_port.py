"""SpeechTokenizer Flax port vs the PyTorch reference (reduced widths, same code path).

The reference is random-init from the config, made realistic (standardized activations,
codebooks fitted to encoder residuals of other utterances), saved in the released layout and
converted; the port then runs on synthetic speech whose lengths are not multiples of 320.
"""

import fcntl
import os

import numpy as np
import pytest


from tokenizers_port.speechtokenizer import agreement, load, reference, synth  # noqa: E402

# A reference SpeechTokenizer and its port, minutes; test_speech_convert checks the port's numbers by default.
pytestmark = pytest.mark.slow

N_CLIPS = 7  # ~480 frames of the committed 0.8-2.2 s clips


def _session_dir(tmp_path_factory):
  # Under xdist each worker has its own basetemp; their parent is this session's, shared.
  base = tmp_path_factory.getbasetemp()
  return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
  import torch
  clips = synth.committed_clips(0, N_CLIPS)
  out = _session_dir(tmp_path_factory) / "speech_small"
  out.mkdir(exist_ok=True)
  with open(out / "lock", "w") as lock:  # the first worker builds, the others reuse
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not (out / "flax" / "params.safetensors").exists():
      agreement.build_pair(reference.SMALL_CONFIG, synth.committed_clips(50, 4), str(out),
                           stats_clips=2, stats_samples=8000)
  model = reference.build_reference(reference.SMALL_CONFIG)
  model.load_state_dict(torch.load(out / "torch" / "SpeechTokenizer.pt"))
  # One padded shape for every call below: fewer compiles on a shared CPU.
  return model, load(str(out / "flax"), pad_multiple=16000 * 8), clips, out


def test_codes_features_and_decoder_match_reference(pair):
  model, tok, clips, _ = pair
  assert all(c.shape[0] % 320 for c in clips)
  stats = agreement.compare(model, tok, clips)
  assert stats["frames"] > 400
  assert stats["agreement_per_layer"][0] >= 0.999, stats
  assert min(stats["agreement_per_layer"]) >= 0.99, stats
  assert stats["feature_max_abs"] > 1.0  # standardized features: the tolerance means something
  assert stats["feature_max_abs_err"] <= 1e-4, stats
  assert stats["decoder_max_abs"] > 0.05
  assert stats["decoder_max_abs_err"] <= 1e-4, stats


def test_padded_batch_gives_each_clip_its_own_codes(pair):
  _, tok, clips, _ = pair
  batch = tok.encode(clips)
  frames = [-(-c.shape[0] // 320) for c in clips]
  assert batch.shape == (8, len(clips), max(frames)) and batch.dtype == np.int32
  for i, clip in enumerate(clips[:3]):
    alone = tok.encode(clip[None])
    assert alone.shape == (8, 1, frames[i])
    np.testing.assert_array_equal(batch[:, i, :frames[i]], alone[:, 0])
    assert (batch[:, i, frames[i]:] == -1).all()
  # The same clips as one zero-padded [B, T] array with lengths.
  padded = np.zeros((len(clips), max(c.shape[0] for c in clips)), np.float32)
  for i, c in enumerate(clips):
    padded[i, :c.shape[0]] = c
  np.testing.assert_array_equal(tok.encode(padded, [c.shape[0] for c in clips]), batch)


def test_n_q_and_decode_lengths(pair):
  _, tok, clips, _ = pair
  full = tok.encode(clips)
  np.testing.assert_array_equal(tok.encode(clips, n_q=3), full[:3])
  wav = tok.decode(full)
  hop = tok.hop_length
  for i, clip in enumerate(clips):
    n = -(-clip.shape[0] // hop) * hop
    assert np.abs(wav[i, :n]).max() > 0 and not wav[i, n:].any()


def test_other_sample_rates_are_resampled_or_rejected(pair):
  _, tok, clips, out = pair
  import soxr
  clip_22k = soxr.resample(clips[1], 16000, 22050).astype(np.float32)
  expected = tok.encode(soxr.resample(clip_22k, 22050, 16000).astype(np.float32)[None])
  np.testing.assert_array_equal(tok.encode(clip_22k[None], sample_rate=22050), expected)
  strict = load(str(out / "flax"), resample=False, pad_multiple=16000 * 8)
  with pytest.raises(ValueError, match="22050 Hz"):
    strict.encode(clip_22k[None], sample_rate=22050)


def test_bad_input_is_rejected_clearly(pair):
  _, tok, clips, _ = pair
  with pytest.raises(ValueError, match=r"\[B, T\]"):
    tok.encode(clips[0])
  with pytest.raises(ValueError, match="lengths"):
    tok.encode(clips[0][None], lengths=[clips[0].shape[0] + 1])
  with pytest.raises(ValueError, match="n_q"):
    tok.encode(clips[0][None], n_q=9)


def test_mesh_sharded_batch_matches(pair):
  import jax
  from jax.sharding import Mesh
  _, tok, clips, out = pair
  mesh = Mesh(np.array(jax.devices()[:2]), ("data",))
  sharded = load(str(out / "flax"), mesh=mesh, pad_multiple=16000 * 8)
  np.testing.assert_array_equal(sharded.encode(clips), tok.encode(clips))
