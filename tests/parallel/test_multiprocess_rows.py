"""Real multi-process runs (127.0.0.1, jax.distributed from JAX_* env vars, CPU devices).

Where the tensor axis spans processes, processes holding the same batch rows feed the same rows,
and a reduction over the global batch equals the one computed here from the full batch; processes
on one host form one node; an unreachable coordinator fails in bounded time with one line."""

import json
import os
import re
import sys

import numpy as np
import pytest
from multiprocess_helpers import run_processes

from mio_jax.data import pipeline
from mio_jax.parallel.batch_split import BatchShard
from mio_jax.train.synthetic_batches import synthetic_row
from mio_jax.train.code_order import training_vocab
import synthetic_shards

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "multiprocess_rows_worker.py")


def weighted(x):
  """sum of x[r, c] * (r + 1) * (c + 1), mod 2**32 as the worker's uint32 sum."""
  rows, cols = np.arange(1, x.shape[0] + 1)[:, None], np.arange(1, x.shape[1] + 1)[None, :]
  return int(np.sum(x.astype(np.int64) * rows * cols) % 2**32)


def expected_weighted(global_batch, seed=3, seq_len=16, vocab=101):
  return weighted(np.stack([synthetic_row(seed, 0, r, seq_len, vocab)["inputs"]
                            for r in range(global_batch)]))


def run(num_processes, devices_per_process, **args) -> list[dict]:
  results = run_processes([sys.executable, WORKER, json.dumps(args)], num_processes,
                          devices_per_process, timeout=240)
  for i, r in enumerate(results):
    assert r.returncode == 0, f"process {i} failed:\n{r.stderr[-3000:]}"
  return [json.loads(next(line for line in r.stdout.splitlines() if line.startswith("RESULT "))[7:])
          for r in results]


@pytest.mark.slow  # two real processes (~3.5 s); the process-pair case stays
def test_tensor_across_two_processes_both_feed_the_whole_batch():
  # Each process its own node; tensor=2 over the two, fsdp=4 inside: every row lives on both.
  out = run(2, 4, ici=dict(fsdp=4), dcn=dict(tensor=2), processes_per_node=1, global_batch=8)
  assert out[0]["shape"] == {"data": 1, "fsdp": 4, "tensor": 2}
  # grid[0, f, t] = device f of process t (each printed as [process, rank among its devices])
  assert out[0]["grid"] == [[t, f] for f in range(4) for t in range(2)]
  assert [o["shard"] for o in out] == [[0, 1, 0, 8], [0, 1, 0, 8]]
  assert [o["weighted"] for o in out] == [expected_weighted(8)] * 2


@pytest.mark.slow  # 4 processes; the 2-process case stays
def test_tensor_across_process_pairs_data_across_pairs():
  # Nodes of two processes; tensor=4 inside a node spans both its processes; data=2 over nodes.
  out = run(4, 2, ici=dict(tensor=4), dcn=dict(data=2), processes_per_node=2, global_batch=8)
  assert out[0]["shape"] == {"data": 2, "fsdp": 1, "tensor": 4}
  assert [o["shard"] for o in out] == [[0, 2, 0, 4], [0, 2, 0, 4], [1, 2, 4, 8], [1, 2, 4, 8]]
  assert [o["weighted"] for o in out] == [expected_weighted(8)] * 4


@pytest.mark.slow  # grain in 4 processes
def test_grain_pipeline_processes_sharing_rows_read_the_same_records(tmp_path):
  # As above, through the shard pipeline: each pair reads records [block::2] and feeds its rows.
  text_model = synthetic_shards.tiny_text_model(str(tmp_path / "sp"))
  synthetic_shards.write_shards(str(tmp_path / "pairs"), "image_text", num_samples=40, num_shards=2)
  p = dict(data_dir=str(tmp_path), text_model=text_model, seq_len=64)
  out = run(4, 2, ici=dict(tensor=4), dcn=dict(data=2), processes_per_node=2, global_batch=8, pipeline=p)
  assert [o["shard"] for o in out] == [[0, 2, 0, 4], [0, 2, 0, 4], [1, 2, 4, 8], [1, 2, 4, 8]]
  cfg = synthetic_shards.pipeline_config(str(tmp_path), text_model, {"pairs": 1}, worker_count=0,
                                  global_batch=8, seq_len=64)
  vocab = training_vocab(cfg)
  blocks = [next(iter(pipeline.build_dataset(cfg.data, vocab, shard=BatchShard(b, 2, slice(4 * b, 4 * b + 4)))))
            for b in range(2)]
  full = np.concatenate([b["inputs"] for b in blocks])
  assert len({tuple(r) for r in full}) == 8  # eight different rows: the blocks are not copies
  assert [o["weighted"] for o in out] == [weighted(full)] * 4


def test_processes_on_one_host_form_one_node():
  # No override: XLA gives both processes' devices the same slice_index (one boot id), so the
  # eight devices form one node and fsdp spans both processes, as 8 one-GPU processes on a node.
  out = run(2, 4, ici=dict(fsdp=-1), dcn=dict(data=-1), processes_per_node=0, global_batch=8)
  assert [(o["unit"], o["shape"]) for o in out] == [("host", {"data": 1, "fsdp": 8, "tensor": 1})] * 2
  assert [o["shard"] for o in out] == [[0, 2, 0, 4], [1, 2, 4, 8]]
  assert [o["weighted"] for o in out] == [expected_weighted(8)] * 2


def test_unreachable_coordinator_fails_in_one_line_naming_it():
  code = ("from mio_jax.parallel import mesh\n"
          "try:\n  mesh.maybe_initialize_distributed(timeout_s=2)\n"
          "except mesh.MeshConfigError as e:\n  print('ERROR', e)\n")
  # Process 1 of 2 with nobody serving the coordinator port.
  [r] = run_processes([sys.executable, "-c", code], 1, 1, timeout=60,
                      env=dict(JAX_PROCESS_ID="1", JAX_NUM_PROCESSES="2"))
  assert r.returncode == 0, r.stderr[-2000:]
  lines = [line for line in r.stdout.splitlines() if line.startswith("ERROR")]
  assert len(lines) == 1 and re.match(
      r"ERROR JAX_COORDINATOR_ADDRESS=127\.0\.0\.1:\d+: no coordinator answered within 2s ", lines[0])
