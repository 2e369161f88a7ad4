"""Converted weights on disk (`params.safetensors` + `config.json`) and the tokenizer API.

Batching policy: clips of different lengths share one padded batch; every conv pads each clip
at its own edges and the backward LSTM reads each clip reversed within its own length, so a
clip gets exactly the codes it gets alone. Batch length is rounded up to `pad_multiple` samples
so few shapes are compiled. Codes past a clip's ceil(L / hop) frames are -1.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from tokenizers_port.speechtokenizer.config import SpeechTokenizerConfig, tiny_config
from tokenizers_port.speechtokenizer.model import SpeechTokenizerModel

PARAMS_FILE = "params.safetensors"
CONFIG_FILE = "config.json"


def _flat_state(model) -> dict:
  flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
  return {"/".join(str(p) for p in path): v for path, v in flat}


def expected_shapes(cfg: SpeechTokenizerConfig) -> dict[str, tuple]:
  abstract = nnx.eval_shape(lambda: SpeechTokenizerModel(cfg))
  return {k: tuple(v.shape) for k, v in _flat_state(abstract).items()}


def random_params(cfg: SpeechTokenizerConfig, seed: int) -> dict[str, np.ndarray]:
  """Random weights for `cfg` (tests, the tiny tokenizers): fan-in scaled normal for every
  parameter of rank >= 2, zero biases, unit scales (Snake alphas)."""
  rng = np.random.default_rng(seed)
  out = {}
  for name, shape in sorted(expected_shapes(cfg).items()):
    if len(shape) >= 2:
      out[name] = (rng.standard_normal(shape) / np.sqrt(np.prod(shape[:-1]))).astype(np.float32)
    else:
      out[name] = (np.zeros if name.endswith("bias") else np.ones)(shape, np.float32)
  return out


def save(out_dir: str, cfg: SpeechTokenizerConfig, params: dict[str, np.ndarray]) -> None:
  from safetensors.numpy import save_file
  os.makedirs(out_dir, exist_ok=True)
  save_file({k: np.ascontiguousarray(v) for k, v in params.items()},
            os.path.join(out_dir, PARAMS_FILE))
  with open(os.path.join(out_dir, CONFIG_FILE), "w") as f:
    json.dump(cfg.to_dict(), f, indent=2)


def save_random_tiny(out_dir: str, seed: int = 0, n_filters: int = 4) -> str:
  """A random-weight tiny SpeechTokenizer folder (tests, benchmark, demo); returns the folder.
  Its codes mean nothing but are a deterministic function of the input."""
  cfg = tiny_config(n_filters=n_filters)
  params = random_params(cfg, seed)
  for name, value in params.items():
    if "codebook" in name or "embed" in name:  # spread the codes: codebook scale ~ feature scale
      params[name] = value * np.sqrt(value.shape[0]) * 0.5
  save(out_dir, cfg, params)
  return out_dir


def save_model(model: SpeechTokenizerModel, directory: str) -> str:
  """A model built or trained in Python -> a folder `load` reads; returns the folder."""
  save(directory, model.cfg, {k: np.asarray(v) for k, v in _flat_state(model).items()})
  return directory


def build_model(cfg: SpeechTokenizerConfig, params: dict[str, np.ndarray], source: str = "params"):
  model = SpeechTokenizerModel(cfg)
  flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
  for path, var in flat:
    name = "/".join(str(p) for p in path)
    if name not in params:
      raise ValueError(f"{source}: missing parameter {name}")
    value = np.asarray(params[name], np.float32)
    if value.shape != var.shape:
      raise ValueError(f"{source}: parameter {name} has shape {value.shape}, expected {var.shape}")
    var.value = jnp.asarray(value)
  nnx.update(model, nnx.from_flat_state(flat))
  return model


def load(model_dir: str, mesh: Mesh | None = None, **overrides) -> "SpeechTokenizer":
  """Loads a converted directory; `overrides` set port-side config keys (resample, pad_multiple)."""
  from safetensors.numpy import load_file
  cfg_path = os.path.join(model_dir, CONFIG_FILE)
  params_path = os.path.join(model_dir, PARAMS_FILE)
  if not os.path.exists(params_path):
    raise FileNotFoundError(
        f"{params_path}: not found (make it with python -m tokenizers_port.convert speechtokenizer)")
  with open(cfg_path) as f:
    raw = json.load(f)
  cfg = SpeechTokenizerConfig.from_dict({**raw, **overrides}, source=cfg_path)
  return SpeechTokenizer(build_model(cfg, load_file(params_path), params_path), mesh)


class SpeechTokenizer:
  """encode: float32 mono [B, T] -> int32 codes [n_q, B, frames]; decode: codes -> [B, T']."""

  def __init__(self, model: SpeechTokenizerModel, mesh: Mesh | None = None):
    self.cfg = model.cfg
    self.mesh = mesh
    self._graph, state = nnx.split(model)
    if mesh is not None:
      state = jax.device_put(state, NamedSharding(mesh, P()))
    self._state = state
    self._encode = jax.jit(self._encode_fn)
    self._decode = jax.jit(self._decode_fn)

  # Pure functions of the state (jitted once per shape).
  def _encode_fn(self, state, waves, lengths):
    # Features and all code layers in one program: `features` and `encode` share a compile, and
    # n_q is a slice (layer q's codes do not depend on later layers).
    model = nnx.merge(self._graph, state)
    feats = model.features(waves, lengths)
    return feats, model.quantizer.encode(feats, self.cfg.n_q)

  def _decode_fn(self, state, codes, lengths):
    return nnx.merge(self._graph, state).decode(codes, lengths)

  @property
  def hop_length(self) -> int:
    return self.cfg.hop_length

  def _prepare(self, waves, lengths, sample_rate):
    """-> padded float32 batch [B', T'], int32 lengths [B'] or None, real B, frames per clip."""
    if isinstance(waves, (list, tuple)):
      clips = [np.asarray(w, np.float32).reshape(-1) for w in waves]
      if lengths is not None:
        raise ValueError("encode: pass lengths only with a padded [B, T] array")
    else:
      arr = np.asarray(waves, np.float32)
      if arr.ndim != 2:
        raise ValueError(f"encode: waves must be float32 mono [B, T], got shape {arr.shape}")
      lens = np.full(arr.shape[0], arr.shape[1]) if lengths is None else np.asarray(lengths)
      if lens.shape != (arr.shape[0],) or (lens < 1).any() or (lens > arr.shape[1]).any():
        raise ValueError(f"encode: lengths must be {arr.shape[0]} values in [1, {arr.shape[1]}]")
      clips = [arr[i, :int(n)] for i, n in enumerate(lens)]
    if sample_rate is not None and sample_rate != self.cfg.sample_rate:
      if not self.cfg.resample:
        raise ValueError(f"encode: input is {sample_rate} Hz but the model takes "
                         f"{self.cfg.sample_rate} Hz (config resample=false)")
      import soxr
      clips = [soxr.resample(c, sample_rate, self.cfg.sample_rate).astype(np.float32) for c in clips]
    lens = np.array([c.shape[0] for c in clips], np.int32)
    if (lens < 1).any():
      raise ValueError(f"encode: clip {int(np.argmin(lens))} is empty")
    t = int(lens.max())
    mult = max(1, self.cfg.pad_multiple)
    t_pad = -(-t // mult) * mult
    b_pad = len(clips)
    if self.mesh is not None:
      n = self.mesh.shape["data"]
      b_pad = -(-b_pad // n) * n
    batch = np.zeros((b_pad, t_pad), np.float32)
    full = np.full(b_pad, t_pad, np.int32)
    for i, c in enumerate(clips):
      batch[i, :c.shape[0]] = c
      full[i] = c.shape[0]
    frames = -(-lens // self.hop_length)
    return batch, (None if (full == t_pad).all() else full), len(clips), frames

  def _place(self, x):
    if self.mesh is None or x is None:
      return x
    return jax.device_put(x, NamedSharding(self.mesh, P("data")))

  def encode(self, waves, lengths=None, n_q: int | None = None, sample_rate: int | None = None):
    """float32 mono [B, T] (or a list of 1-D clips) -> int32 codes [n_q, B, max frames].

    Clip i has ceil(lengths[i] / hop) frames; later positions are -1.
    """
    n_q = n_q or self.cfg.n_q
    if not 1 <= n_q <= self.cfg.n_q:
      raise ValueError(f"encode: n_q must be in [1, {self.cfg.n_q}], got {n_q}")
    batch, lens, b, frames = self._prepare(waves, lengths, sample_rate)
    _, codes = self._encode(self._state, self._place(batch), self._place(lens))
    codes = np.asarray(codes)[:n_q, :b, :int(frames.max())].copy()
    for i, f in enumerate(frames):
      codes[:, i, f:] = -1
    return codes

  def features(self, waves, lengths=None, sample_rate: int | None = None):
    """Pre-quantizer features [B, max frames, dimension] (zero past each clip's frames)."""
    batch, lens, b, frames = self._prepare(waves, lengths, sample_rate)
    feats, _ = self._encode(self._state, self._place(batch), self._place(lens))
    feats = np.asarray(feats)[:b, :int(frames.max())].copy()
    for i, f in enumerate(frames):
      feats[i, f:] = 0.0
    return feats

  def decode(self, codes, lengths=None):
    """int codes [n_q, B, F] -> float32 waveforms [B, F * hop] (zero past each clip's end).

    lengths (frames per clip) defaults to the count of non-negative codes in layer 1.
    """
    codes = np.asarray(codes)
    if codes.ndim != 3 or codes.shape[0] > self.cfg.n_q:
      raise ValueError(f"decode: codes must be [n_q <= {self.cfg.n_q}, B, frames], got {codes.shape}")
    if codes.max() >= self.cfg.codebook_size:
      raise ValueError(f"decode: code {int(codes.max())} is out of range [0, {self.cfg.codebook_size})")
    if lengths is None:
      lengths = (codes[0] >= 0).sum(-1)
    lengths = np.asarray(lengths, np.int32)
    f = codes.shape[2]
    lens = None if (lengths == f).all() else lengths
    safe = np.where(codes < 0, 0, codes).astype(np.int32)
    wav = np.array(self._decode(self._state, safe, lens))
    hop = self.hop_length
    for i, n in enumerate(lengths):
      wav[i, int(n) * hop:] = 0.0
    return wav
