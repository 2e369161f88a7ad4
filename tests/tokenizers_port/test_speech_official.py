"""SpeechTokenizer port at the released config (dimension 1024, 2-layer BiLSTM, 8 x 1024 codes).

The default test runs two short clips (the CPU budget); the slow one is the few-dozen-utterance
agreement run also printed by `python -m tokenizers_port.speechtokenizer.agreement` (which decodes
all 32; the test decodes 4, the decoder being most of the cost).
"""


import pytest


from tokenizers_port.speechtokenizer import agreement, reference, synth  # noqa: E402


def _check(stats, layer1=0.999, all_layers=0.99):
  assert stats["agreement_per_layer"][0] >= layer1, stats
  assert min(stats["agreement_per_layer"]) >= all_layers, stats
  assert stats["feature_max_abs"] > 1.0 and stats["feature_max_abs_err"] <= 1e-4, stats
  assert stats["decoder_max_abs"] > 0.05 and stats["decoder_max_abs_err"] <= 1e-4, stats


@pytest.mark.slow  # the official config, minutes; test_speech_convert covers the port
def test_official_config_short_clips(tmp_path):
  clips = synth.committed_clips(0, 2)
  calib = synth.committed_clips(50, 1)
  assert all(c.shape[0] % 320 for c in clips)
  model, tok = agreement.build_pair(reference.OFFICIAL_CONFIG, calib, str(tmp_path),
                                    stats_clips=1, stats_samples=8000, pad_multiple=16000)
  _check(agreement.compare(model, tok, clips))


@pytest.mark.slow
def test_official_config_agreement_few_dozen_utterances(tmp_path):
  clips = synth.committed_clips(0, 32)
  calib = synth.committed_clips(50, 32)
  model, tok = agreement.build_pair(reference.OFFICIAL_CONFIG, calib, str(tmp_path))
  stats = agreement.compare(model, tok, clips, decoded=4)
  print(stats)
  # The 32 committed espeak-ng clips are 43 s of speech: over 2,000 frames at 50 per second.
  assert stats["frames"] >= 50 * sum(c.shape[0] for c in clips) // 16000 > 2000
  _check(stats)
