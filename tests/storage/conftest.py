"""A GCS emulator (gcp-storage-emulator, in this process) for the gs:// tests (clients: storage_helpers).

gcsfs reads its variable on every request; the other clients when they first open a gs:// path. So
one emulator serves the whole session, and each test works under its own prefix of the one bucket.
"""

import logging
import os
import uuid

import pytest

from storage_helpers import BUCKET, emulator_env, free_port


@pytest.fixture(scope="session")
def gcs_emulator():
  from gcp_storage_emulator.server import create_server

  logging.getLogger("gcp_storage_emulator").setLevel(logging.CRITICAL)  # 404s are expected probes
  logging.getLogger("gcsfs").setLevel(logging.ERROR)  # "could not determine bucket type" on each open
  port = free_port()
  server = create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET)
  server.start()
  url = f"http://127.0.0.1:{port}"
  saved = {k: os.environ.get(k) for k in emulator_env(url)}
  os.environ.update(emulator_env(url))
  yield url
  for k, v in saved.items():
    if v is None:
      os.environ.pop(k, None)
    else:
      os.environ[k] = v
  server.stop()


@pytest.fixture
def gs_dir(gcs_emulator) -> str:
  """A fresh gs:// folder on the emulator."""
  return f"gs://{BUCKET}/{uuid.uuid4().hex[:12]}"
