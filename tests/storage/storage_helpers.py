"""Shared by the gs:// tests and their conftest: the emulator's bucket, a free port, the client variables.

Each client is pointed at the emulator its own way:
  gcsfs (etils.epath's gs:// backend without TensorFlow)  STORAGE_EMULATOR_HOST
  ArrayRecord's reader (riegeli, google-cloud-cpp)         CLOUD_STORAGE_EMULATOR_ENDPOINT
  tensorstore (orbax's array data)                         TENSORSTORE_GCS_HTTP_URL, with
                                                           GOOGLE_AUTH_TOKEN_FOR_TESTING for auth
"""

import socket

BUCKET = "mio-test"


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def emulator_env(url: str) -> dict[str, str]:
  return {"STORAGE_EMULATOR_HOST": url, "CLOUD_STORAGE_EMULATOR_ENDPOINT": url,
          "TENSORSTORE_GCS_HTTP_URL": url, "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator"}
