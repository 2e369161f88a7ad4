"""benchmarks/speech_encode.py runs on a machine without espeak-ng: its clips then come from the
committed data/mini/speech utterances (issue #22, item 4)."""

import numpy as np

from benchmarks import speech_encode
from tokenizers_port.speechtokenizer import synth


def test_falls_back_to_committed_clips_without_espeak(monkeypatch):
  monkeypatch.setattr(synth.shutil, "which", lambda name: None)  # no espeak-ng on PATH
  clips, source = speech_encode.speech_clips(4, 4.0, 16000)
  assert "committed clips" in source and "espeak-ng not installed" in source
  cap = 4 * 16000
  assert len(clips) == 4 and all(c.dtype == np.float32 and c.ndim == 1 for c in clips)
  assert all(cap // 4 <= c.shape[0] <= cap for c in clips)
  assert len({c.shape[0] for c in clips}) > 1  # variable lengths, so the padded batch is exercised
  # Built from the committed audio itself: the first utterance starts with clip 0000.wav.
  first = synth.committed_clips(0, 1)[0]
  n = min(first.shape[0], clips[0].shape[0])
  np.testing.assert_array_equal(clips[0][:n], first[:n])
