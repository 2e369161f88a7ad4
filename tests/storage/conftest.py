"""A GCS emulator (gcp-storage-emulator, its own process) for the gs:// tests (clients: storage_helpers).

gcsfs reads its variable on every request; the other clients when they first open a gs:// path. So
one emulator serves the whole session, and each test works under its own prefix of the one bucket.
The emulator is a single-threaded Python HTTP server: run inside the test process it waited for the
GIL behind training; in a process of its own it answers like a separate server. It is started
through gcs_emulator.py, which adds the generation preconditions tensorstore's OCDBT relies on.
"""

import logging
import os
import socket
import subprocess
import sys
import time
import uuid

import pytest

from storage_helpers import BUCKET, emulator_env, free_port


def _wait_for_port(port: int, proc: subprocess.Popen, seconds: float = 60.0) -> None:
  deadline = time.monotonic() + seconds
  while time.monotonic() < deadline:
    if proc.poll() is not None:
      raise RuntimeError(f"gcp-storage-emulator exited with {proc.returncode} before serving")
    try:
      with socket.create_connection(("127.0.0.1", port), timeout=1):
        return
    except OSError:
      time.sleep(0.1)
  raise RuntimeError(f"gcp-storage-emulator did not listen on 127.0.0.1:{port} in {seconds:.0f} s")


@pytest.fixture(scope="session")
def gcs_emulator():
  logging.getLogger("gcsfs").setLevel(logging.ERROR)  # "could not determine bucket type" on each open
  port = free_port()
  launcher = os.path.join(os.path.dirname(__file__), "gcs_emulator.py")  # with GCS's preconditions
  proc = subprocess.Popen([sys.executable, launcher, "start", "--host", "127.0.0.1",
                           "--port", str(port), "--in-memory", "--default-bucket", BUCKET, "--quiet"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    _wait_for_port(port, proc)
    url = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in emulator_env(url)}
    os.environ.update(emulator_env(url))
    yield url
    for k, v in saved.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v
  finally:
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture
def gs_dir(gcs_emulator) -> str:
  """A fresh gs:// folder on the emulator."""
  return f"gs://{BUCKET}/{uuid.uuid4().hex[:12]}"
