"""The sharded safetensors writer: shards as huggingface_hub's splitter documents them (worked by
hand here), each written once its last tensor arrives, named and indexed as save_pretrained does.
(Whether transformers loads the result: tests/export/test_export_to_hf.py.)"""

import json
import os

import numpy as np
import pytest
from safetensors import safe_open

from mio_jax.export.safetensors_io import INDEX, SINGLE, Reader, ShardedWriter


def _tensors(kb_sizes):
  return {f"t{i}": np.full(kb * 1000, i, np.uint8) for i, kb in enumerate(kb_sizes)}


def _contents(out, name):
  with safe_open(os.path.join(out, name), framework="numpy") as f:
    return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def _temporaries(out):
  return [n for n in os.listdir(out) if n.endswith(".tmp")]


@pytest.mark.parametrize("kb_sizes, expected", [
    # huggingface_hub's docstring example: [6, 6, 2, 6, 2, 2] GB under 10 GB -> [6], [6+2], [6+2+2]
    ([6, 6, 2, 6, 2, 2], [["t0"], ["t1", "t2"], ["t3", "t4", "t5"]]),
    # A tensor over the limit gets a shard of its own, placed before the shard still filling.
    ([3, 12, 3], [["t1"], ["t0", "t2"]]),
])
def test_shards_follow_the_size_plan_and_are_written_as_they_fill(tmp_path, kb_sizes, expected):
  out = str(tmp_path)
  tensors = _tensors(kb_sizes)
  writer = ShardedWriter(out, {k: v.nbytes for k, v in tensors.items()}, max_shard_bytes=10_000)
  n = len(expected)
  names = [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
  done = set()
  for k, v in tensors.items():
    writer.add(k, v)
    done.add(k)
    # Every shard whose tensors have all arrived is on disk (as a temporary), the others are not.
    assert len(_temporaries(out)) == sum(set(shard) <= done for shard in expected)
  assert writer.close() == names
  assert not _temporaries(out)
  with open(os.path.join(out, INDEX)) as f:
    index = json.load(f)
  assert index["metadata"] == {"total_size": 1000 * sum(kb_sizes)}
  assert index["weight_map"] == {t: names[i] for i, shard in enumerate(expected) for t in shard}
  for name, shard in zip(names, expected):
    got, metadata = _contents(out, name)
    assert sorted(got) == sorted(shard) and metadata == {"format": "pt"}
    for t in shard:
      np.testing.assert_array_equal(got[t], tensors[t])
  reader = Reader(out)
  assert reader.names() == set(tensors)
  np.testing.assert_array_equal(reader.get("t2"), tensors["t2"])


def test_one_shard_is_model_safetensors_without_index(tmp_path):
  tensors = _tensors([2, 3, 1])
  writer = ShardedWriter(str(tmp_path), {k: v.nbytes for k, v in tensors.items()}, max_shard_bytes=10_000)
  for k in ("t2", "t0", "t1"):  # any order
    writer.add(k, tensors[k])
  assert writer.close() == [SINGLE]
  assert sorted(os.listdir(tmp_path)) == [SINGLE]
  assert sorted(_contents(str(tmp_path), SINGLE)[0]) == ["t0", "t1", "t2"]


def test_unplanned_resized_repeated_or_missing_tensors_are_refused(tmp_path):
  tensors = _tensors([2, 3])
  writer = ShardedWriter(str(tmp_path), {k: v.nbytes for k, v in tensors.items()}, max_shard_bytes=4_000)
  with pytest.raises(ValueError, match="tensor t9 was not planned"):
    writer.add("t9", tensors["t0"])
  with pytest.raises(ValueError, match="tensor t0 has 3000 bytes, 2000 planned"):
    writer.add("t0", tensors["t1"])
  writer.add("t0", tensors["t0"])
  with pytest.raises(ValueError, match="tensor t0 written twice"):
    writer.add("t0", tensors["t0"])
  with pytest.raises(ValueError, match="1 planned tensors were never added, e.g. t1"):
    writer.close()
