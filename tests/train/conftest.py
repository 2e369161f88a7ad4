"""Real token shards for the train-loop tests: the tokenization job over a mini-corpus subset.

The job runs with code-from-signal encoder doubles (tests/encoder_doubles.py, no tokenizer
weights), so the shards are the job's real output format, made in a few seconds.
"""

import pytest


@pytest.fixture(scope="session")
def mini_shards(tmp_path_factory) -> str:
  """A glob of mixed-kind shards: 8 samples of each kind of the mini corpus."""
  import configs.tokenize as tokenize_config
  from mio_jax.tokenize import job
  import encoder_doubles
  import tokenize_helpers as helpers
  tmp = tmp_path_factory.mktemp("train_shards")
  kinds = ("image_text", "speech_text", "video_text", "interleaved", "text", "conversation")
  inputs = helpers.subset_manifests(str(tmp / "in"), {k: 8 for k in kinds})
  c = tokenize_config.get_config("mini")
  c.input, c.output_dir, c.shard_size, c.progress = ",".join(inputs), str(tmp / "out"), 8, False
  c.process_index, c.process_count = 0, 1
  job.run(c, encoder_doubles.use_double_encoders(c))
  return str(tmp / "out" / "shards" / "*.array_record")
