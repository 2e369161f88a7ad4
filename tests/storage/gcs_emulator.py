"""gcp-storage-emulator with GCS's generation preconditions: `python gcs_emulator.py start --port P ...`.

The emulator (2026.7.19) ignores ifGenerationMatch / ifGenerationNotMatch and sends no
x-goog-generation header with an object's bytes. tensorstore's OCDBT driver, which holds orbax's
array data, relies on both: when its cached manifest is stale it reads it again with
ifGenerationNotMatch=<the generation it wrote>, gets a 200 without a generation instead of GCS's 304,
and its next conditional write of the manifest fails with "Malformed StorageGeneration". The cache
goes stale only when a checkpoint's writes take long, so the gs:// training test failed under load
(in CI; here with four busy processes beside it, on the first of 1 to 5 runs) and passed alone. Here object reads and
uploads answer as GCS documents: 304 / 412 on a failed precondition, the generation headers on reads.
https://cloud.google.com/storage/docs/request-preconditions
"""

import functools
import sys
from http import HTTPStatus

from gcp_storage_emulator import server
from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects


def _query_int(request, name: str) -> int | None:
  values = request.query.get(name)
  return int(values[0]) if values else None


def _live_object(storage, bucket: str, name: str) -> dict | None:
  try:
    return storage.get_file_obj(bucket, name)
  except NotFound:
    return None


def _failed_precondition(request, generation: int | None) -> HTTPStatus | None:
  """GCS's answer when a precondition does not hold (generation None: no live object)."""
  match, not_match = _query_int(request, "ifGenerationMatch"), _query_int(request, "ifGenerationNotMatch")
  if match is not None and (generation or 0) != match:  # 0 means "must not exist yet"
    return HTTPStatus.PRECONDITION_FAILED
  if not_match is not None and generation is not None and generation == not_match:
    return HTTPStatus.NOT_MODIFIED
  return None


def _checked_read(handler):
  @functools.wraps(handler)
  def read(request, response, storage, *args, **kwargs):
    obj = _live_object(storage, request.params["bucket_name"], request.params["object_id"])
    if obj is not None and not request.query.get("softDeleted"):
      generation = int(obj["generation"])
      failed = _failed_precondition(request, generation)
      if failed is not None:
        response.status = failed
        return None
      response["x-goog-generation"] = str(generation)
      response["x-goog-metageneration"] = str(obj.get("metageneration", "1"))
    return handler(request, response, storage, *args, **kwargs)
  return read


def _upload_name(request) -> str | None:
  if request.query.get("name"):
    return request.query["name"][0]
  data = request.data
  return data.get("meta", {}).get("name") if isinstance(data, dict) else None


def _checked_upload(handler):
  @functools.wraps(handler)
  def upload(request, response, storage, *args, **kwargs):
    name = _upload_name(request)
    if name is not None:
      obj = _live_object(storage, request.params["bucket_name"], name)
      # Either precondition failing refuses an upload with 412; the server is single-threaded, so
      # no write can come between the check and this one.
      if _failed_precondition(request, None if obj is None else int(obj["generation"])) is not None:
        response.status = HTTPStatus.PRECONDITION_FAILED
        return None
    return handler(request, response, storage, *args, **kwargs)
  return upload


def install() -> None:
  """Wraps the object read and upload handlers, in the module and in the server's route table."""
  wrapped = {objects.get: _checked_read(objects.get), objects.download: _checked_read(objects.download),
             objects.insert: _checked_upload(objects.insert)}
  replaced = 0
  for _, methods in server.HANDLERS:
    for method, handler in methods.items():
      methods[method] = wrapped.get(handler, handler)
      replaced += handler in wrapped
  if replaced < len(wrapped):  # a newer emulator laid out its routes differently
    raise RuntimeError(f"gcs_emulator.py: wrapped {replaced} of the emulator's object routes, expected "
                       f"at least {len(wrapped)}; check it against gcp-storage-emulator's server.HANDLERS")
  # objects.get calls download() by its module name and the router falls back to objects.insert;
  # the inner check of get -> download finds the same object and passes.
  objects.get, objects.download, objects.insert = (wrapped[f] for f in (objects.get, objects.download,
                                                                        objects.insert))


if __name__ == "__main__":
  install()
  from gcp_storage_emulator.__main__ import main
  sys.exit(main(sys.argv[1:]))
