"""benchmarks/seed_encode.py end to end on the reduced config (the tests' 56 px model): both sides
timed under the protocol, and the Flax codes agree with the PyTorch reference's on the timed
images (the reference is the oracle; a mismatch can only be a near tie)."""

import pytest

from benchmarks import seed_encode


@pytest.mark.slow  # builds, converts and times both sides (~9 s with torch's import); test_seed_convert stays
def test_reduced_config_runs_and_codes_agree_with_reference(capsys):
  result = seed_encode.main(["--config=reduced", "--batch=4", "--rounds=2"])
  out = capsys.readouterr().out
  assert result["agreement"] >= 0.97  # 128 codes: at most a few near ties
  assert set(result["stats"]) == {"torch", "flax"}
  assert all(s.rounds == 2 and 0 < s.best <= s.median for s in result["stats"].values())
  for line in ("== SEED-Tokenizer-2 encode", "load before:", "code agreement on the timed images",
               "xtorch:", "load after:", "peak RSS:"):
    assert line in out, line
