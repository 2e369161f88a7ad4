"""Decode a RawSample's media, apply MIO's filters, and bring media to the encoders' input form.

Images: Pillow, RGB, then the image tokenizer's policy (MediaConfig.image_resize): shorter side resized
to the encoder size (bicubic) and centre crop (VQGAN), or a squash resize to S x S (SEED-Tokenizer-2:
MIO's clip_transform, PIL bilinear).
Speech: soundfile, mixed to mono, resampled to 16 kHz with soxr (or refused when resampling is off).
Video: PyAV, frames chosen uniformly (video-text pairs: segment centres, or MIO's extract_frames rule
"mio_uniform") or by scene change (interleaved video).
Every failure raises MediaError with one line naming the file and the reason; the job quarantines it.
"""

import dataclasses
import io
import os

import av
import numpy as np
import soundfile as sf
import soxr
from PIL import Image

from mio_jax import storage
from mio_jax.tokenize.manifests import ManifestError, RawSample


class MediaError(Exception):
  """A sample that cannot be used: str(e) is the quarantine reason (one line naming the file),
  `category` a short fixed key for the summary's counts."""

  def __init__(self, message: str, category: str | None = None):
    super().__init__(message)
    self.category = category or message


# PIL filters of the squash resizes (SEED's config resize_method "linear" / "cubic").
_SQUASH_FILTERS = {"squash_bilinear": Image.Resampling.BILINEAR, "squash_bicubic": Image.Resampling.BICUBIC}
IMAGE_RESIZES = ("center_crop",) + tuple(_SQUASH_FILTERS)
VIDEO_MODES = ("uniform", "mio_uniform", "keyframes")


@dataclasses.dataclass(frozen=True)
class MediaConfig:
  image_size: int = 256  # the image encoder's input side
  image_resize: str = "center_crop"  # one of IMAGE_RESIZES; set by the image tokenizer
  image_min_side: int = 224  # MIO: images under 224x224 are dropped
  image_max_aspect: float = 2.0  # MIO: aspect ratio over 2:1 is dropped
  video_min_side: int = 224
  video_max_aspect: float = 2.0
  sample_rate: int = 16000
  resample: bool = True
  min_input_rate: int = 8000  # rates outside [min, max] are refused even with resampling on
  max_input_rate: int = 192000
  speech_max_s: float = 15.0  # MIO: clips over 15 s are dropped
  pair_video_mode: str = "uniform"  # video_text samples: one of VIDEO_MODES
  interleaved_video_mode: str = "keyframes"  # video parts of interleaved docs and conversations
  num_frames: int = 4  # uniform: frames per video-text pair (MIO: 4-8); mio_uniform: every
  # (declared frame count // num_frames)-th frame, as MIO's extract_frames with 10 ("~10 frames")
  max_keyframes: int = 8
  scene_threshold: float = 30.0  # mean absolute difference (0-255) of 32x32 grey thumbnails


def _check_frame_size(w: int, h: int, min_side: int, max_aspect: float, what: str, path: str):
  if min(w, h) < min_side:
    raise MediaError(f"{what} under {min_side}x{min_side} ({w}x{h}): {path}",
                     f"{what} under {min_side}x{min_side}")
  if max(w, h) / min(w, h) > max_aspect:
    raise MediaError(f"{what} aspect ratio over {max_aspect:g}:1 ({w}x{h}): {path}",
                     f"{what} aspect ratio over {max_aspect:g}:1")


def resize_center_crop(img: Image.Image, size: int) -> np.ndarray:
  w, h = img.size
  scale = size / min(w, h)
  nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
  img = img.resize((nw, nh), Image.Resampling.BICUBIC)
  left, top = (nw - size) // 2, (nh - size) // 2
  return np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)


def to_encoder_input(img: Image.Image, cfg: MediaConfig) -> np.ndarray:
  """uint8 [S, S, 3] by cfg.image_resize. The squash resizes are MIO's clip_transform.yaml
  (transforms.Resize((S, S)) on a PIL image: PIL's filter, aspect ratio not kept, no crop)."""
  if cfg.image_resize == "center_crop":
    return resize_center_crop(img, cfg.image_size)
  size = (cfg.image_size, cfg.image_size)
  return np.asarray(img.resize(size, _SQUASH_FILTERS[cfg.image_resize]), dtype=np.uint8)


def _where(part: dict) -> str:
  return part.get("path") or ("<bytes>" if "data" in part else "<array>")


def load_image(part: dict, cfg: MediaConfig) -> np.ndarray:
  """-> uint8 [S, S, 3]."""
  try:
    if "array" in part:
      img = Image.fromarray(np.asarray(part["array"], dtype=np.uint8))
    else:  # a file, or its bytes (TFDS images, read undecoded)
      img = Image.open(io.BytesIO(part["data"]) if "data" in part else part["path"])
      img.load()  # decode now: truncated files fail here, not later
    img = img.convert("RGB")
  except FileNotFoundError:
    raise MediaError(f"image file missing: {part['path']}", "missing file") from None
  except Exception as e:  # Pillow raises several types for corrupt data
    raise MediaError(f"unreadable image {_where(part)}: {e}", "unreadable image") from None
  _check_frame_size(*img.size, cfg.image_min_side, cfg.image_max_aspect, "image", _where(part))
  return to_encoder_input(img, cfg)


def load_speech(part: dict, cfg: MediaConfig) -> np.ndarray:
  """-> float32 [T] mono at cfg.sample_rate."""
  path = _where(part)
  try:
    if "wave" in part:
      x, sr = np.asarray(part["wave"]), int(part["sample_rate"])
      if x.dtype == np.int16:
        x = x.astype(np.float32) / 32768.0
    else:  # a file, or its bytes (TFDS audio stored encoded)
      x, sr = sf.read(io.BytesIO(part["data"]) if "data" in part else path, dtype="float32", always_2d=True)
  except FileNotFoundError:
    raise MediaError(f"audio file missing: {path}", "missing file") from None
  except Exception as e:  # soundfile raises LibsndfileError / RuntimeError for corrupt data
    raise MediaError(f"unreadable audio {path}: {e}", "unreadable audio") from None
  x = np.asarray(x, dtype=np.float32)
  if x.ndim == 2:
    x = x.mean(axis=1)
  if x.size == 0:
    raise MediaError(f"zero-length audio {path}", "zero-length audio")
  if not cfg.min_input_rate <= sr <= cfg.max_input_rate:
    raise MediaError(f"unsupported sample rate {sr} Hz in {path}", "unsupported sample rate")
  if sr != cfg.sample_rate:
    if not cfg.resample:
      raise MediaError(f"unsupported sample rate {sr} Hz in {path} (resampling disabled)",
                       "unsupported sample rate")
    x = soxr.resample(x, sr, cfg.sample_rate).astype(np.float32)
  seconds = x.size / cfg.sample_rate
  if seconds > cfg.speech_max_s:
    raise MediaError(f"speech over {cfg.speech_max_s:g} s ({seconds:.1f} s) in {path}",
                     f"speech over {cfg.speech_max_s:g} s")
  if not np.all(np.isfinite(x)):
    raise MediaError(f"non-finite samples in {path}", "unreadable audio")
  return x


def uniform_indices(n_total: int, n: int) -> np.ndarray:
  """Centres of n equal segments: frame choice independent of the decoder's frame count guess."""
  if n_total <= n:
    return np.arange(n_total)
  return ((np.arange(n) + 0.5) * n_total / n).astype(np.int64)


def mio_uniform_indices(n_total: int, n: int) -> np.ndarray:
  """MIO's extract_frames(force_uniform=True) (utils.py): every max(1, n_total // n)-th frame from
  frame 0: n to 2n - 1 frames, or every frame of a video under 2n frames ("~10" with n = 10)."""
  return np.arange(0, n_total, max(1, n_total // n), dtype=np.int64)


def select_keyframes(cuts: np.ndarray, strength: np.ndarray, max_keyframes: int) -> np.ndarray:
  """Frame 0 plus the scene starts `cuts`; with more than max_keyframes in all, frame 0 and the
  strongest cuts, in time order."""
  cuts = np.asarray(cuts, np.int64)
  if len(cuts) >= max_keyframes:
    cuts = np.sort(cuts[np.argsort(-np.asarray(strength), kind="stable")[:max_keyframes - 1]])
  return np.concatenate([[0], cuts]).astype(np.int64)


def keyframe_indices(thumbs: np.ndarray, threshold: float, max_keyframes: int) -> np.ndarray:
  """A scene starts where consecutive thumbnails differ (mean absolute difference) by > threshold."""
  diffs = np.abs(np.diff(thumbs.astype(np.float32), axis=0)).mean(axis=(1, 2))
  cuts = np.nonzero(diffs > threshold)[0] + 1
  return select_keyframes(cuts, diffs[cuts - 1], max_keyframes)


def _thumb(img: Image.Image) -> np.ndarray:
  return np.asarray(img.convert("L").resize((32, 32), Image.Resampling.BILINEAR))


def _decode_frames(path: str, keep, data: bytes | None = None) -> tuple[int, dict[int, Image.Image], Image.Image | None]:
  """Decode every frame, keeping those for which keep(index, image) is true: memory is bounded by
  the frames kept, not the video's length. -> (frame count, kept frames, first frame)."""
  kept, first, n = {}, None, 0
  try:
    with av.open(path if data is None else io.BytesIO(data)) as container:
      for n, frame in enumerate(container.decode(video=0), start=1):
        img = frame.to_image()
        first = first or img
        if keep(n - 1, img):
          kept[n - 1] = img
  except Exception as e:  # PyAV raises InvalidDataError and friends for corrupt data
    raise MediaError(f"unreadable video {path}: {e}", "unreadable video") from None
  if n == 0:
    raise MediaError(f"video without decodable frames: {path}", "unreadable video")
  return n, kept, first


def _declared_frame_count(path: str, data: bytes | None) -> int:
  """The container's frame count (0: not declared), as cv2's CAP_PROP_FRAME_COUNT reads it."""
  try:
    with av.open(path if data is None else io.BytesIO(data)) as container:
      return container.streams.video[0].frames if container.streams.video else 0
  except Exception as e:
    raise MediaError(f"unreadable video {path}: {e}", "unreadable video") from None


def load_video(part: dict, mode: str, cfg: MediaConfig) -> np.ndarray:
  """-> uint8 [F, S, S, 3] sampled frames."""
  path, data = part["path"], part.get("data")
  if data is None and not os.path.exists(path):
    raise MediaError(f"video file missing: {path}", "missing file")
  if mode == "uniform":
    declared = _declared_frame_count(path, data)
    wanted = set(uniform_indices(declared, cfg.num_frames).tolist()) if declared else None
    n, kept, first = _decode_frames(path, lambda i, _: wanted is None or i in wanted, data)
    idx = uniform_indices(n, cfg.num_frames)
    if not set(idx.tolist()) <= set(kept):  # the container's frame count was wrong: decode again
      n, kept, first = _decode_frames(path, lambda i, _, w=set(idx.tolist()): i in w, data)
  elif mode == "mio_uniform":
    # MIO reads the interval off the container's frame count (cv2 CAP_PROP_FRAME_COUNT) and keeps
    # every decoded frame at a multiple of it; without a declared count, the decoded one.
    declared = _declared_frame_count(path, data)
    if not declared:
      declared = _decode_frames(path, lambda i, _: False, data)[0]
    interval = max(1, declared // cfg.num_frames)
    n, kept, first = _decode_frames(path, lambda i, _: i % interval == 0, data)
    idx = np.array(sorted(kept), np.int64)
  elif mode == "keyframes":
    prev, scores = [None], {}

    def is_scene_start(i, img):
      t = _thumb(img).astype(np.float32)
      score = np.inf if prev[0] is None else float(np.abs(t - prev[0]).mean())
      prev[0] = t
      if score > cfg.scene_threshold:
        scores[i] = score
        return True
      return False

    n, kept, first = _decode_frames(path, is_scene_start, data)
    cuts = sorted(i for i in kept if i > 0)
    idx = select_keyframes(np.array(cuts), [scores[i] for i in cuts], cfg.max_keyframes)
  else:
    raise MediaError(f"unknown video sampling mode {mode!r} (config keys media.pair_video_mode, "
                     "media.interleaved_video_mode)")
  _check_frame_size(*first.size, cfg.video_min_side, cfg.video_max_aspect, "video", path)
  return np.stack([to_encoder_input(kept[int(i)].convert("RGB"), cfg) for i in idx])


def read_sidecar(path: str) -> str:
  try:
    text = storage.as_path(path).read_bytes().decode("utf-8").strip()
  except UnicodeDecodeError:
    raise MediaError(f"text {path} is not valid UTF-8", "text not UTF-8") from None
  except OSError as e:
    raise MediaError(f"unreadable text {path}: {e}", "missing text") from None
  if not text:
    raise MediaError(f"empty text {path}", "missing text")
  return text


def fetch_remote(part: dict) -> dict:
  """A media part whose path is on object storage (gs://) with the file's bytes as "data": the
  decoders read bytes like TFDS media (Pillow, soundfile and PyAV want a seekable local file)."""
  path = part.get("path")
  if part["type"] == "text" or not path or not storage.is_remote(path):
    return part
  try:
    return {**part, "data": storage.as_path(path).read_bytes()}
  except FileNotFoundError:
    raise MediaError(f"{part['type']} file missing: {path}", "missing file") from None
  except OSError as e:
    raise MediaError(f"unreadable {part['type']} {path}: {e}", "missing file") from None


def decode_sample(raw: RawSample, cfg: MediaConfig) -> list[dict]:
  """RawSample -> parts with decoded media: {"type": "image", "pixels"}, {"type": "video", "frames"},
  {"type": "speech", "wave"}, {"type": "text", "text"} (roles kept). Raises MediaError."""
  if raw.fetch is not None:
    try:
      raw = raw.fetch()
    except ManifestError as e:
      raise MediaError(f"bad example: {e}", "bad row") from None
  if raw.error:
    raise MediaError(raw.error, raw.error.split(":")[0])
  video_mode = cfg.pair_video_mode if raw.kind == "video_text" else cfg.interleaved_video_mode
  out = []
  for part in raw.parts:
    part = fetch_remote(part)
    t = part["type"]
    if t == "text":
      new = {"type": "text", "text": part["text"] if "text" in part else read_sidecar(part["path"])}
    elif t == "image":
      new = {"type": "image", "pixels": load_image(part, cfg)}
    elif t == "speech":
      new = {"type": "speech", "wave": load_speech(part, cfg)}
    elif t == "video":
      new = {"type": "video", "frames": load_video(part, video_mode, cfg)}
    else:
      raise MediaError(f"unknown part type {t!r}")
    if "role" in part:
      new["role"] = part["role"]
    out.append(new)
  return out
