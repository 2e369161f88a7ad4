"""The test emulator keeps GCS's generation preconditions, which tensorstore's OCDBT (orbax) relies on."""

import tensorstore as ts

from storage_helpers import BUCKET


def test_reads_and_writes_honour_generation_preconditions(gs_dir):
  kv = ts.KvStore.open({"driver": "gcs", "bucket": BUCKET, "path": gs_dir.split("/", 3)[3] + "/"}).result()
  first = kv.write("manifest", b"one").result()
  read = kv.read("manifest").result()
  assert (read.state, read.value, read.stamp.generation) == ("value", b"one", first.generation)
  # GCS answers 304 to ifGenerationNotMatch=<current>: nothing changed, no bytes sent.
  assert kv.read("manifest", if_not_equal=first.generation).result().state == "unspecified"
  second = kv.write("manifest", b"two", if_equal=first.generation).result()
  assert second.generation not in (b"", first.generation)
  # A write conditioned on a generation that is no longer current is refused (412) and changes nothing.
  assert kv.write("manifest", b"three", if_equal=first.generation).result().generation == b""
  assert kv.read("manifest").result().value == b"two"
  assert kv.read("manifest", if_not_equal=first.generation).result().value == b"two"
