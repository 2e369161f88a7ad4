"""Real token shards for the train-loop tests: the tokenization job over a mini-corpus subset.

The job runs with code-from-signal encoder doubles (tests/encoder_doubles.py, no tokenizer
weights), so the shards are the job's real output format, made in a few seconds.
"""

import pytest


@pytest.fixture(scope="session")
def mini_shards(tmp_path_factory) -> str:
  """A glob of mixed-kind shards: 8 samples of each kind of the mini corpus."""
  from tokenize_helpers import tokenize_mini_subset
  tmp = tmp_path_factory.mktemp("train_shards")
  tokenize_mini_subset(str(tmp / "in"), str(tmp / "out"), per_kind=8, shard_size=8)
  return str(tmp / "out" / "shards" / "*.array_record")
