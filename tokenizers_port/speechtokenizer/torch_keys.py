"""Released `SpeechTokenizer.pt` state dict -> flat Flax parameters ("encoder/conv_in/kernel", ...).

Where each Flax weight lives in the PyTorch `nn.Sequential` layout is computed from the config.
Weight norm (old API, dim 0) is folded in float64: w = g * v / ||v||, norm over all but dim 0.
Conv kernels go from [C_out, C_in, k] to [k, C_in, C_out]; transposed-conv kernels from
[C_in, C_out, k] to [k, C_in, C_out]; LSTM matrices are transposed and the two biases summed.
"""

import numpy as np

from tokenizers_port.speechtokenizer.config import SpeechTokenizerConfig

# Buffers and heads the tokenizer does not use (training state, the HuBERT distillation head).
IGNORED_SUFFIXES = ("._codebook.inited", "._codebook.cluster_size", "._codebook.embed_avg")
IGNORED_PREFIXES = ("transform.",)


class CheckpointError(ValueError):
  pass


class _Reader:
  """Fetches tensors by key with one-line errors, and remembers which keys were used."""

  def __init__(self, state: dict, source: str):
    self.state, self.source, self.used = state, source, set()
    self.origin: dict[str, str] = {}  # flax name -> the torch key it came from, for errors

  def get(self, key: str, ndim: int | None = None, shape: tuple | None = None) -> np.ndarray:
    if key not in self.state:
      raise CheckpointError(f"{self.source}: missing key {key}")
    self.used.add(key)
    value = np.asarray(self.state[key], np.float64)
    if ndim is not None and value.ndim != ndim:
      raise CheckpointError(f"{self.source}: key {key} has shape {value.shape}, expected {ndim} dims")
    if shape is not None and value.shape != tuple(shape):
      raise CheckpointError(f"{self.source}: key {key} has shape {value.shape}, expected {tuple(shape)}")
    return value

  def weight_normed(self, prefix: str) -> np.ndarray:
    for g_key, v_key in ((f"{prefix}.weight_g", f"{prefix}.weight_v"),
                         (f"{prefix}.parametrizations.weight.original0",
                          f"{prefix}.parametrizations.weight.original1")):
      if v_key in self.state:
        v, g = self.get(v_key, 3), self.get(g_key)
        if g.size != v.shape[0]:
          raise CheckpointError(f"{self.source}: key {g_key} has shape {g.shape}, "
                                f"expected ({v.shape[0]}, 1, 1) to match {v_key}")
        norm = np.sqrt((v ** 2).reshape(v.shape[0], -1).sum(1)).reshape(-1, 1, 1)
        return g.reshape(-1, 1, 1) * v / norm
    if f"{prefix}.weight" in self.state:  # an already-folded checkpoint
      return self.get(f"{prefix}.weight", 3)
    raise CheckpointError(f"{self.source}: missing key {prefix}.weight_g / {prefix}.weight_v")


def _conv(r, out, name, prefix):
  r.origin[f"{name}/kernel"] = f"{prefix}.conv.conv.weight_v"
  w = r.weight_normed(f"{prefix}.conv.conv")
  out[f"{name}/kernel"] = w.transpose(2, 1, 0)
  out[f"{name}/bias"] = r.get(f"{prefix}.conv.conv.bias", 1)


def _conv_tr(r, out, name, prefix):
  r.origin[f"{name}/kernel"] = f"{prefix}.convtr.convtr.weight_v"
  w = r.weight_normed(f"{prefix}.convtr.convtr")
  out[f"{name}/kernel"] = w.transpose(2, 0, 1)
  out[f"{name}/bias"] = r.get(f"{prefix}.convtr.convtr.bias", 1)


def _act(r, out, name, prefix, cfg):
  if cfg.activation == "Snake":
    out[f"{name}/alpha"] = r.get(f"{prefix}.alpha").reshape(-1)


def _res(r, out, name, prefix, cfg):
  _act(r, out, f"{name}/act1", f"{prefix}.block.0", cfg)
  _conv(r, out, f"{name}/conv1", f"{prefix}.block.1")
  _act(r, out, f"{name}/act2", f"{prefix}.block.2", cfg)
  _conv(r, out, f"{name}/conv2", f"{prefix}.block.3")
  _conv(r, out, f"{name}/shortcut", f"{prefix}.shortcut")


def _lstm(r, out, name, prefix, cfg, bidirectional):
  suffixes = ("", "_reverse") if bidirectional else ("",)
  h = cfg.n_filters * 2 ** len(cfg.strides)
  for layer in range(cfg.lstm_layers):
    c_in = h if layer == 0 else len(suffixes) * h
    w_ih, w_hh, bias = [], [], []
    for sfx in suffixes:
      key = f"{prefix}.lstm.%s_l{layer}{sfx}"
      w_ih.append(r.get(key % "weight_ih", shape=(4 * h, c_in)).T)
      w_hh.append(r.get(key % "weight_hh", shape=(4 * h, h)).T)
      bias.append(r.get(key % "bias_ih", shape=(4 * h,)) + r.get(key % "bias_hh", shape=(4 * h,)))
    out[f"{name}/layers/{layer}/w_ih"] = np.stack(w_ih)
    out[f"{name}/layers/{layer}/w_hh"] = np.stack(w_hh)
    out[f"{name}/layers/{layer}/bias"] = np.stack(bias)


def _encoder(r, out, cfg):
  _conv(r, out, "encoder/conv_in", "encoder.model.0")
  i = 1
  for stage in range(len(cfg.strides)):
    for j in range(cfg.n_residual_layers):
      _res(r, out, f"encoder/stages/{stage}/res/{j}", f"encoder.model.{i}", cfg)
      i += 1
    _act(r, out, f"encoder/stages/{stage}/act", f"encoder.model.{i}", cfg)
    _conv(r, out, f"encoder/stages/{stage}/down", f"encoder.model.{i + 1}")
    i += 2
  if cfg.lstm_layers:
    _lstm(r, out, "encoder/lstm", f"encoder.model.{i}", cfg, cfg.bidirectional)
    i += 1
  _act(r, out, "encoder/act", f"encoder.model.{i}", cfg)
  _conv(r, out, "encoder/conv_out", f"encoder.model.{i + 1}")


def _decoder(r, out, cfg):
  _conv(r, out, "decoder/conv_in", "decoder.model.0")
  i = 1
  if cfg.lstm_layers:
    _lstm(r, out, "decoder/lstm", "decoder.model.1", cfg, False)
    i += 1
  for stage in range(len(cfg.strides)):
    _act(r, out, f"decoder/stages/{stage}/act", f"decoder.model.{i}", cfg)
    _conv_tr(r, out, f"decoder/stages/{stage}/up", f"decoder.model.{i + 1}")
    i += 2
    for j in range(cfg.n_residual_layers):
      _res(r, out, f"decoder/stages/{stage}/res/{j}", f"decoder.model.{i}", cfg)
      i += 1
  _act(r, out, "decoder/act", f"decoder.model.{i}", cfg)
  _conv(r, out, "decoder/conv_out", f"decoder.model.{i + 1}")


def convert_state_dict(state: dict, cfg: SpeechTokenizerConfig,
                       expected_shapes: dict[str, tuple], source: str) -> dict[str, np.ndarray]:
  """Maps a PyTorch state dict (numpy values) to {flax path: float32 array}, checking shapes."""
  r = _Reader(state, source)
  out: dict[str, np.ndarray] = {}
  _encoder(r, out, cfg)
  books = [r.get(f"quantizer.vq.layers.{i}._codebook.embed", shape=(cfg.codebook_size, cfg.dimension))
           for i in range(cfg.n_q)]
  out["quantizer/codebooks"] = np.stack(books)
  _decoder(r, out, cfg)
  for name, value in out.items():
    want = expected_shapes.get(name)
    if want is None:
      raise CheckpointError(f"{source}: produced unknown parameter {name} (port bug)")
    if tuple(value.shape) != tuple(want):
      where = f" (from {r.origin[name]})" if name in r.origin else ""
      raise CheckpointError(f"{source}: weights for {name}{where} have shape {value.shape} "
                            f"(Flax layout), expected {tuple(want)} from the config")
  missing = sorted(set(expected_shapes) - set(out))
  if missing:
    raise CheckpointError(f"{source}: no weights for {missing[0]} (and {len(missing) - 1} more)")
  extra = [k for k in state if k not in r.used and not k.endswith(IGNORED_SUFFIXES)
           and not k.startswith(IGNORED_PREFIXES)]
  if extra:
    raise CheckpointError(f"{source}: unexpected key {extra[0]} ({len(extra)} unexpected in all): "
                          "does the config match the checkpoint?")
  return {k: v.astype(np.float32) for k, v in out.items()}
