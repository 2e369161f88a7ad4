"""The embedding reader: each point once per pass, a fixed order from the step alone, processes'
rows that add up to the one-process batch, and one-line errors for unusable files."""

import numpy as np
import pytest

from mio_jax.codebook.reader import EmbeddingReader, list_files
from mio_jax.config.keys import ConfigError

SIZES = (50, 7, 31, 20, 13)  # 121 points; streams of 2: files 0, 2, 4 (94) and 1, 3 (27)


@pytest.fixture()
def folder(tmp_path):
  start = 0
  for i, n in enumerate(SIZES):  # column 0 numbers the point (from 1), the rest is its number too
    ids = np.arange(start + 1, start + n + 1, dtype=np.float32)
    np.save(tmp_path / f"e{i}.npy", np.repeat(ids[:, None], 3, axis=1))
    start += n
  return str(tmp_path)


def reader(folder, shuffle=True, rows=None, seed=0):
  return EmbeddingReader(list_files(folder), global_batch=16, streams=2, shuffle=shuffle, seed=seed,
                         rows=rows)


def pass_ids(r, epoch):
  ids = []
  for step in range(epoch * r.steps_per_pass, (epoch + 1) * r.steps_per_pass):
    x, w = r.local_rows(step)
    assert np.all(x[w == 0] == 0) and set(np.unique(w)) <= {0.0, 1.0}
    ids += list(x[w == 1, 0].astype(int))
  return ids


def test_every_point_once_per_pass_in_a_new_order_each_pass(folder):
  r = reader(folder)
  assert (r.points, r.steps_per_pass) == (121, 12)  # ceil(94 / 8)
  first, second = pass_ids(r, 0), pass_ids(r, 1)
  assert sorted(first) == sorted(second) == list(range(1, 122))
  assert first != second


def test_without_shuffle_a_stream_reads_its_files_in_order(folder):
  r = reader(folder, shuffle=False)
  x, w = r.stream_rows_at(1, 3)  # stream 1 = files 1 (ids 51-57), 3 (ids 89-108); rows 24-31 of it
  assert list(x[:, 0].astype(int)) == [106, 107, 108, 0, 0, 0, 0, 0]  # 27 rows, then padding
  assert list(w) == [1, 1, 1, 0, 0, 0, 0, 0]
  x, _ = r.stream_rows_at(1, 0)
  assert list(x[:, 0].astype(int)) == [51, 52, 53, 54, 55, 56, 57, 89]


def test_the_rows_of_a_step_depend_on_the_step_alone(folder):
  a, b = reader(folder), reader(folder)
  for step in (30, 0, 13, 29):  # random access, another reader, the same rows
    np.testing.assert_array_equal(a.local_rows(step)[0], b.local_rows(step)[0])
  assert not np.array_equal(reader(folder, seed=1).local_rows(0)[0], a.local_rows(0)[0])


def test_two_processes_rows_make_the_one_process_batch(folder):
  whole, top, bottom = reader(folder), reader(folder, rows=slice(0, 8)), reader(folder, rows=slice(8, 16))
  for step in (0, 5, 11, 12):
    np.testing.assert_array_equal(np.concatenate([top.local_rows(step)[0], bottom.local_rows(step)[0]]),
                                  whole.local_rows(step)[0])


def test_rows_that_split_a_stream_are_refused_in_one_line(folder):
  with pytest.raises(ConfigError, match=r"^config\.data\.streams=2 must be a multiple of the 4 row "):
    reader(folder, rows=slice(0, 4))
  with pytest.raises(ConfigError, match=r"^config\.data\.streams=6 is more than the 5 embedding files$"):
    EmbeddingReader(list_files(folder), global_batch=12, streams=6, shuffle=False, seed=0)


def test_unusable_files_are_named_in_one_line(tmp_path):
  with pytest.raises(ConfigError, match=r"^config\.data\.embeddings='.*': no \.npy files there$"):
    list_files(str(tmp_path))
  np.save(tmp_path / "a.npy", np.zeros((4, 3), np.float32))
  np.save(tmp_path / "b.npy", np.zeros((4, 5), np.float32))
  with pytest.raises(ConfigError, match=r"^config\.data\.embeddings: files of different widths \[3, 5\]"):
    list_files(str(tmp_path))
  np.save(tmp_path / "b.npy", np.zeros((4, 3), np.int32))
  with pytest.raises(ConfigError, match=r"^config\.data\.embeddings: .*b\.npy holds int32 \(4, 3\)"):
    list_files(str(tmp_path))
