"""MetricWriter: visible non-finite values, absent metrics as null, resume without duplicate rows,
TensorBoard purge on resume; on local disk and on gs:// (emulator)."""

import json
import math

import pytest

from mio_jax import storage
from mio_jax.train.metrics import MetricWriter
from tb_events import read_scalars


def rows(workdir: str) -> list[dict]:
  text = storage.as_path(workdir + "/metrics.jsonl").read_text()
  return [json.loads(line) for line in text.splitlines()]


def loss(step: int, run: int) -> float:
  return 100.0 * run + step  # which run wrote a value is visible in the value


@pytest.fixture(params=["local", "gs"])
def workdir(request, tmp_path):
  if request.param == "local":
    return str(tmp_path / "run")
  return request.getfixturevalue("gs_dir") + "/run"


def test_non_finite_is_written_as_text_and_absent_as_null(workdir):
  w = MetricWriter(workdir)
  w.write(1, {"loss": float("nan"), "grad_norm": float("inf"), "lr": float("-inf"), "loss_image": None,
              "mfu": 0.25, "tokens": 7})
  w.close()
  (row,) = rows(workdir)
  assert row == {"step": 1, "loss": "nan", "grad_norm": "inf", "lr": "-inf", "loss_image": None,
                 "mfu": 0.25, "tokens": 7}
  scalars, _ = read_scalars(workdir + "/tensorboard")
  assert "loss_image" not in scalars  # absent: nothing plotted
  assert math.isnan(scalars["loss"][1][0]) and scalars["grad_norm"][1] == [math.inf]


def test_resume_drops_rows_and_events_after_the_checkpoint(workdir):
  w = MetricWriter(workdir)
  for s in range(1, 11):
    w.write(s, {"loss": loss(s, 1)})
  w.close()
  w = MetricWriter(workdir, resume_step=6)  # the run died at 10, its last checkpoint was 6
  assert [r["step"] for r in rows(workdir)] == [1, 2, 3, 4, 5, 6]  # rewritten on open
  for s in range(7, 11):
    w.write(s, {"loss": loss(s, 2)})
  w.close()
  got = rows(workdir)
  assert [r["step"] for r in got] == list(range(1, 11))
  assert [r["loss"] for r in got] == [loss(s, 1) for s in range(1, 7)] + [loss(s, 2) for s in range(7, 11)]

  scalars, starts = read_scalars(workdir + "/tensorboard")
  assert starts == [7]  # the purge marker: TensorBoard discards the first run's steps >= 7
  assert scalars["loss"] == {s: [loss(s, 1 if s <= 6 else 2)] for s in range(1, 11)}


def test_resume_without_rows_after_the_checkpoint_keeps_the_file(tmp_path):
  workdir = str(tmp_path)
  w = MetricWriter(workdir)
  for s in (1, 2):
    w.write(s, {"loss": 1.0})
  w.close()
  with open(workdir + "/metrics.jsonl", "a") as f:
    f.write('{"step": 3, "lo')  # torn last line of a killed run: dropped on resume
  MetricWriter(workdir, resume_step=2).close()
  assert [r["step"] for r in rows(workdir)] == [1, 2]


def test_remote_sync_uploads_while_running_and_rotates_event_files(gs_dir):
  w = MetricWriter(gs_dir, sync_every_s=0.0, rotate_bytes=100)
  for s in range(1, 6):
    w.write(s, {"loss": float(s)})
    assert [r["step"] for r in rows(gs_dir)] == list(range(1, s + 1))  # visible before close
  w.close()
  assert len(storage.glob(gs_dir + "/tensorboard/events.out.tfevents.*")) > 1
  scalars, _ = read_scalars(gs_dir + "/tensorboard")
  assert scalars["loss"] == {s: [float(s)] for s in range(1, 6)}


def test_disabled_writer_touches_nothing(tmp_path):
  w = MetricWriter(str(tmp_path / "run"), enabled=False)
  w.write(1, {"loss": 1.0})
  w.close()
  assert not (tmp_path / "run").exists()
