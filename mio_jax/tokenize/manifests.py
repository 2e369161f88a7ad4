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

import dataclasses
import json
import os
from typing import Any, Callable

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
  base = os.path.dirname(os.path.abspath(path))
  samples = []
  with open(path, "rb") as f:
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
  for dirpath, dirnames, filenames in os.walk(root):
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
      if not os.path.exists(sidecar):
        samples.append(RawSample(kind, path, error=f"missing sidecar text: {sidecar}"))
        continue
      samples.append(RawSample(kind, path, [{"type": media, "path": path},
                                            {"type": "text", "path": sidecar}]))
  return samples


def coco_captions_parts(features: dict) -> list[dict]:
  """TFDS coco_captions example -> image_text parts with its first caption (one sample per image)."""
  texts = features["captions"]["text"]
  texts = [t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in texts]
  if not texts:
    raise ManifestError("coco_captions example without captions")
  return [{"type": "image", "array": features["image"]}, {"type": "text", "text": _text(texts[0], "caption")}]


def librispeech_parts(features: dict, sample_rate: int = 16000) -> list[dict]:
  """TFDS librispeech example (int16 speech at 16 kHz, bytes text) -> speech_text parts."""
  text = features["text"]
  text = text.decode("utf-8") if isinstance(text, bytes) else str(text)
  return [{"type": "speech", "wave": features["speech"], "sample_rate": sample_rate},
          {"type": "text", "text": _text(text.lower(), "transcript")}]


TFDS_MAPPINGS = {"coco_captions": ("image_text", coco_captions_parts),
                 "librispeech": ("speech_text", librispeech_parts)}


def read_tfds(name: str, split: str, data_dir: str | None = None) -> list[RawSample]:
  """A random-access TFDS source (tfds.data_source); examples are fetched in decode workers."""
  import tensorflow_datasets as tfds  # optional: only TFDS inputs need it

  family = name.split("/")[0].split(":")[0]
  if family not in TFDS_MAPPINGS:
    raise ManifestError(f"no sample mapping for TFDS data set {name!r}; known: {sorted(TFDS_MAPPINGS)}")
  kind, to_parts = TFDS_MAPPINGS[family]
  source = tfds.data_source(name, split=split, data_dir=data_dir)

  def fetcher(i: int) -> Callable[[], RawSample]:
    def fetch() -> RawSample:
      return RawSample(kind, f"tfds:{name}/{split}[{i}]", to_parts(source[i]))
    return fetch

  return [RawSample(kind, f"tfds:{name}/{split}[{i}]", fetch=fetcher(i)) for i in range(len(source))]


def read_inputs(spec: str, tfds_data_dir: str | None = None) -> list[RawSample]:
  """Comma-separated inputs: PATH.jsonl, KIND:PATH.jsonl, folder:DIR, tfds:NAME/SPLIT."""
  samples = []
  for item in (s.strip() for s in spec.split(",")):
    if not item:
      continue
    prefix, _, rest = item.partition(":")
    if prefix == "folder":
      samples += read_folder(rest)
    elif prefix == "tfds":
      name, _, split = rest.rpartition("/")
      samples += read_tfds(name, split or "train", tfds_data_dir or None)
    elif prefix in KINDS:
      samples += read_jsonl(rest, prefix)
    elif os.path.isdir(item):
      samples += read_folder(item)
    elif os.path.isfile(item):
      samples += read_jsonl(item)
    else:
      raise ManifestError(f"input {item!r}: no such file or folder (config key `input`)")
  return samples
