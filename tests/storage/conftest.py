"""A GCS emulator (gcp-storage-emulator, in this process) for the gs:// tests.

Each client is pointed at it its own way:
  gcsfs (etils.epath's gs:// backend without TensorFlow)  STORAGE_EMULATOR_HOST
  ArrayRecord's reader (riegeli, google-cloud-cpp)         CLOUD_STORAGE_EMULATOR_ENDPOINT
  tensorstore (orbax's array data)                         TENSORSTORE_GCS_HTTP_URL, with
                                                           GOOGLE_AUTH_TOKEN_FOR_TESTING for auth
gcsfs reads its variable on every request; the others when they first open a gs:// path. So one
emulator serves the whole session, and each test works under its own prefix of the one bucket.
"""

import logging
import os
import socket
import uuid

import pytest

BUCKET = "mio-test"


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def emulator_env(url: str) -> dict[str, str]:
  return {"STORAGE_EMULATOR_HOST": url, "CLOUD_STORAGE_EMULATOR_ENDPOINT": url,
          "TENSORSTORE_GCS_HTTP_URL": url, "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator"}


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
