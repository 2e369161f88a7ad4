"""Input readers: JSONL manifests, folders with sidecar text, TFDS data sets -> RawSample lists.

A RawSample names its media (paths, or a lazy TFDS fetch); nothing is decoded here. A row that
cannot be understood still becomes a RawSample, with `error` set, so that it is counted as read
and lands in quarantine instead of vanishing.

JSONL rows (media paths relative to the manifest's folder; an optional "kind" overrides inference):
  image_text    {"image": PATH, "caption": STR}
  speech_text   {"audio": PATH, "transcript": STR}
  video_text    {"video": PATH, "description": STR}
  interleaved   {"parts": [{"type": "text", "text": STR} | {"type": "image"|"speech"|"video", "path": PATH}]}
  text          {"text": STR}
  conversation  {"messages": [{"role": "system"|"user"|"assistant", "content": STR | [parts]}]}
"""

import contextlib
import dataclasses
import functools
import io
import json
import os
from typing import Any, Callable

from mio_jax import storage

KINDS = ("image_text", "speech_text", "video_text", "interleaved", "text", "conversation")
MEDIA_TYPES = ("image", "speech", "video")
ROLES = ("system", "user", "assistant")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
AUDIO_EXTS = (".wav", ".flac", ".ogg", ".mp3")
VIDEO_EXTS = (".mp4", ".webm", ".mkv", ".avi", ".mov")
# Keys that identify a row's kind when it carries no explicit "kind".
_KEYS = {"image_text": ("image", "caption"), "speech_text": ("audio", "transcript"),
         "video_text": ("video", "description"), "interleaved": ("parts",), "text": ("text",),
         "conversation": ("messages",)}


@dataclasses.dataclass
class RawSample:
  kind: str
  source: str  # "manifest.jsonl:LINE", a media path, or "tfds:NAME/SPLIT[INDEX]"
  parts: list[dict] = dataclasses.field(default_factory=list)
  error: str | None = None
  # TFDS rows are fetched lazily (in a decode worker): fetch() returns the filled-in RawSample.
  fetch: Callable[[], "RawSample"] | None = None


class ManifestError(ValueError):
  pass


def _infer_kind(row: dict) -> str:
  if "kind" in row:
    return row["kind"]
  for kind, keys in _KEYS.items():
    if all(k in row for k in keys):
      return kind
  for kind, keys in _KEYS.items():  # a row with some of a kind's keys: name what is missing
    if any(k in row for k in keys):
      missing = [k for k in keys if k not in row]
      raise ManifestError(f"{kind} row lacks {missing}")
  raise ManifestError(f"cannot tell the sample kind from keys {sorted(row)}")


def _text(value: Any, what: str) -> str:
  if not isinstance(value, str) or not value.strip():
    raise ManifestError(f"missing or empty {what}")
  try:
    value.encode("utf-8")
  except UnicodeEncodeError:  # lone surrogates from a "\udcxx" JSON escape
    raise ManifestError(f"{what} is not valid UTF-8") from None
  return value


def _media(kind: str, path: Any, base: str, role: str | None = None) -> dict:
  if not isinstance(path, str) or not path:
    raise ManifestError(f"{kind} part without a path")
  part = {"type": kind, "path": os.path.join(base, path)}
  if role:
    part["role"] = role
  return part


def _parts_list(items: Any, base: str, role: str | None, where: str) -> list[dict]:
  if isinstance(items, str):
    items = [{"type": "text", "text": items}]
  if not isinstance(items, list) or not items:
    raise ManifestError(f"{where} must be a string or a non-empty list of parts")
  parts = []
  for p in items:
    t = p.get("type") if isinstance(p, dict) else None
    if t == "text":
      part = {"type": "text", "text": _text(p.get("text"), f"{where} text")}
      if role:
        part["role"] = role
      parts.append(part)
    elif t in MEDIA_TYPES:
      parts.append(_media(t, p.get("path"), base, role))
    else:
      raise ManifestError(f"{where}: unknown part type {t!r}")
  return parts


def row_to_parts(kind: str, row: dict, base: str) -> list[dict]:
  """Media first, then text, for the pair kinds: the training template decides the final order."""
  if kind == "image_text":
    return [_media("image", row["image"], base), {"type": "text", "text": _text(row["caption"], "caption")}]
  if kind == "speech_text":
    return [_media("speech", row["audio"], base),
            {"type": "text", "text": _text(row["transcript"], "transcript")}]
  if kind == "video_text":
    return [_media("video", row["video"], base),
            {"type": "text", "text": _text(row["description"], "description")}]
  if kind == "text":
    return [{"type": "text", "text": _text(row["text"], "text")}]
  if kind == "interleaved":
    return _parts_list(row["parts"], base, None, "parts")
  if kind == "conversation":
    msgs = row["messages"]
    if not isinstance(msgs, list) or not msgs:
      raise ManifestError("messages must be a non-empty list")
    parts = []
    for i, m in enumerate(msgs):
      role = m.get("role") if isinstance(m, dict) else None
      if role not in ROLES:
        raise ManifestError(f"message {i} has role {role!r}, expected one of {ROLES}")
      parts += _parts_list(m.get("content"), base, role, f"message {i} content")
    return parts
  raise ManifestError(f"unknown kind {kind!r}, expected one of {KINDS}")


def read_jsonl(path: str, kind: str | None = None) -> list[RawSample]:
  """One RawSample per non-blank line, in file order; bad lines carry their reason in `error`."""
  # Relative media paths are relative to the manifest's folder, on gs:// too.
  base = os.path.dirname(storage.as_str(path))
  samples = []
  with storage.as_path(path).open("rb") as f:
    for lineno, raw in enumerate(f, start=1):
      if not raw.strip():
        continue
      source = f"{path}:{lineno}"
      try:
        row = json.loads(raw.decode("utf-8"))
        if not isinstance(row, dict):
          raise ManifestError("line is not a JSON object")
        k = kind or _infer_kind(row)
        samples.append(RawSample(k, source, row_to_parts(k, row, base)))
      except UnicodeDecodeError:
        samples.append(RawSample(kind or "unknown", source, error="manifest line is not valid UTF-8"))
      except json.JSONDecodeError as e:
        samples.append(RawSample(kind or "unknown", source, error=f"invalid JSON: {e.msg}"))
      except (ManifestError, KeyError, TypeError, AttributeError) as e:
        samples.append(RawSample(kind or "unknown", source, error=f"bad row: {e}"))
  return samples


def read_folder(root: str) -> list[RawSample]:
  """Media files with a sidecar STEM.txt (read at decode time), walked in sorted order."""
  samples = []
  walk = storage.as_path(root).walk() if storage.is_remote(root) else os.walk(root)
  for dirpath, dirnames, filenames in walk:
    dirpath = os.fspath(dirpath)
    dirnames.sort()
    for name in sorted(filenames):
      stem, ext = os.path.splitext(name)
      ext = ext.lower()
      media = ("image" if ext in IMAGE_EXTS else "speech" if ext in AUDIO_EXTS
               else "video" if ext in VIDEO_EXTS else None)
      if media is None:
        continue
      path = os.path.join(dirpath, name)
      kind = {"image": "image_text", "speech": "speech_text", "video": "video_text"}[media]
      sidecar = os.path.join(dirpath, stem + ".txt")
      if not storage.as_path(sidecar).exists():
        samples.append(RawSample(kind, path, error=f"missing sidecar text: {sidecar}"))
        continue
      samples.append(RawSample(kind, path, [{"type": media, "path": path},
                                            {"type": "text", "path": sidecar}]))
  return samples


def coco_captions_parts(features: dict) -> list[dict]:
  """TFDS coco_captions example -> image_text parts with its first caption (one sample per image).

  read_tfds asks TFDS not to decode the image, so "image" is the stored JPEG's bytes and the job's
  own Pillow path decodes it (as for manifest files): corrupt images are then quarantined, not fatal.
  """
  texts = [t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in features["captions"]["text"]]
  if not texts:
    raise ManifestError("coco_captions example without captions")
  image = features["image"]
  part = {"type": "image", "data": image} if isinstance(image, bytes) else {"type": "image", "array": image}
  return [part, {"type": "text", "text": _text(texts[0], "caption")}]


def librispeech_parts(features: dict, sample_rate: int = 16000) -> list[dict]:
  """TFDS librispeech example -> speech_text parts; transcripts (upper case there) are lower-cased.

  "speech" is int16 samples at the feature's sample_rate (read_tfds passes it), or, from the
  lazy_decode config, the FLAC file's bytes, which carry their own rate.
  """
  text = features["text"]
  text = text.decode("utf-8") if isinstance(text, bytes) else str(text)
  speech = features["speech"]
  part = ({"type": "speech", "data": speech} if isinstance(speech, bytes)
          else {"type": "speech", "wave": speech, "sample_rate": sample_rate})
  return [part, {"type": "text", "text": _text(text.lower(), "transcript")}]


TFDS_MAPPINGS = {"coco_captions": ("image_text", coco_captions_parts),
                 "librispeech": ("speech_text", librispeech_parts)}


# The TFDS release _tfds_audio_without_tensorflow's patch was checked against (requirements.txt's pin).
TFDS_AUDIO_PATCH_VERIFIED = "4.9.10"


def _tfds_audio_without_tensorflow(tfds):
  """Let tfds.features.Audio be built without TensorFlow (tensorflow/datasets#11233, open).

  Its decoder's __init__ calls tf.dtypes.as_dtype only to keep a TF dtype for TF-side decoding, so
  without TensorFlow no data set with speech (librispeech) can even be opened, though reading its
  int16 arrays needs nothing from TF. TFDS has no public route around it (features.json rebuilds
  the Audio feature, and every decoder option runs after that), so a private __init__ is replaced,
  only when the construction actually fails. The patch was checked on TFDS_AUDIO_PATCH_VERIFIED:
  another version warns, and a patch that no longer fits raises one line naming both versions.
  The lazy_decode config still needs TensorFlow (its Audio feature's stored dtype is tf.string).
  """
  import logging

  import numpy as np

  try:
    with contextlib.redirect_stdout(io.StringIO()):  # TFDS prints a banner when TF is missing
      tfds.features.Audio(dtype=np.int16, sample_rate=16000)
    return
  except ModuleNotFoundError as e:
    if e.name != "tensorflow" and "tensorflow" not in str(e):
      raise
  version = getattr(tfds, "__version__", "unknown")
  if version != TFDS_AUDIO_PATCH_VERIFIED:
    logging.getLogger("mio_jax.tokenize").warning(
        "tensorflow-datasets %s: the Audio-without-TensorFlow patch was verified on %s only",
        version, TFDS_AUDIO_PATCH_VERIFIED)
  try:
    from tensorflow_datasets.core.features import audio_feature

    def init(self, file_format, np_dtype, shape):
      self._file_format, self._np_dtype, self._shape = file_format, np_dtype, shape
      self._channels = shape[1] if len(shape) > 1 else 1

    audio_feature._AudioDecoder.__init__ = init
    tfds.features.Audio(dtype=np.int16, sample_rate=16000)
  except Exception as e:  # noqa: BLE001 - any failure means the same: the patch does not fit
    raise ManifestError(f"tensorflow-datasets {version}: cannot build its Audio feature without "
                        f"TensorFlow (the patch fits {TFDS_AUDIO_PATCH_VERIFIED}; install that "
                        f"version, or TensorFlow): {type(e).__name__}: {e}") from None


def read_tfds(name: str, split: str, data_dir: str | None = None) -> list[RawSample]:
  """A prepared TFDS data set (array_record files), random access; examples are fetched in decode
  workers. NAME is "coco_captions", "librispeech", optionally with "/CONFIG" and ":VERSION".

  The builder comes from the prepared files (dataset_info.json, features.json), not from TFDS's
  builder code, so nothing is ever downloaded or generated here, and reading needs no TensorFlow
  (the official coco_captions and librispeech builder classes import it on construction).
  """
  try:
    import tensorflow_datasets as tfds  # optional: only TFDS inputs need it
  except ImportError:
    raise ManifestError(f"input tfds:{name}/{split} needs tensorflow_datasets (pip install "
                        "tensorflow-datasets; TensorFlow itself is not needed)") from None
  from tensorflow_datasets.core import read_only_builder, registered

  family = name.split("/")[0].split(":")[0]
  if family not in TFDS_MAPPINGS:
    raise ManifestError(f"no sample mapping for TFDS data set {name!r}; known: {sorted(TFDS_MAPPINGS)}")
  kind, to_parts = TFDS_MAPPINGS[family]
  _tfds_audio_without_tensorflow(tfds)
  try:
    builder = read_only_builder.builder_from_files(name, data_dir=data_dir)
  except registered.DatasetNotFoundError as e:
    raise ManifestError(f"TFDS data set {name!r} is not prepared under {data_dir or 'the default data dir'} "
                        f"(config key tfds_data_dir): {str(e).splitlines()[0]}") from None
  except ModuleNotFoundError as e:  # e.g. librispeech/lazy_decode: its Audio feature is TF-only
    raise ManifestError(f"TFDS data set {name!r} cannot be opened without {e.name}: {e}") from None
  features = builder.info.features
  decoders = None
  if family == "coco_captions":
    decoders = {"image": tfds.decode.SkipDecoding()}
  elif family == "librispeech":
    rate = features["speech"].sample_rate or builder.info.metadata.get("sample_rate")
    if not rate:
      raise ManifestError(f"TFDS data set {name!r}: the speech feature names no sample rate")
    to_parts = functools.partial(librispeech_parts, sample_rate=int(rate))
  try:
    source = builder.as_data_source(split=split, decoders=decoders)
  except (NotImplementedError, ValueError) as e:  # not array_record, or no such split
    raise ManifestError(f"TFDS data set {name!r} split {split!r}: {e}") from None

  def fetcher(i: int) -> Callable[[], RawSample]:
    def fetch() -> RawSample:
      return RawSample(kind, f"tfds:{name}/{split}[{i}]", to_parts(source[i]))
    return fetch

  return [RawSample(kind, f"tfds:{name}/{split}[{i}]", fetch=fetcher(i)) for i in range(len(source))]


def read_inputs(spec: str, tfds_data_dir: str | None = None) -> list[RawSample]:
  """Comma-separated inputs: PATH.jsonl, KIND:PATH.jsonl, folder:DIR, tfds:NAME/SPLIT (tfds:NAME: train)."""
  samples = []
  for item in (s.strip() for s in spec.split(",")):
    if not item:
      continue
    prefix, _, rest = item.partition(":")
    if storage.is_remote(item):  # gs://... : the scheme is no input prefix
      prefix = ""
    if prefix == "folder":
      samples += read_folder(rest)
    elif prefix == "tfds":
      name, _, split = rest.rpartition("/") if "/" in rest else (rest, "", "train")
      samples += read_tfds(name, split, tfds_data_dir or None)
    elif prefix in KINDS:
      samples += read_jsonl(rest, prefix)
    elif storage.as_path(item).is_dir():
      samples += read_folder(item)
    elif storage.as_path(item).is_file():
      samples += read_jsonl(item)
    else:
      raise ManifestError(f"input {item!r}: no such file or folder (config key `input`)")
  return samples
