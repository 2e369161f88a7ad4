"""SpeechTokenizer model config: the model keys of the released `config.json`, validated."""

import dataclasses
import json

# Keys of the released config.json the model is built from (the rest are training settings).
REQUIRED_KEYS = ("n_filters", "strides", "dimension", "bidirectional", "dilation_base",
                 "residual_kernel_size", "n_residual_layers", "lstm_layers", "activation",
                 "codebook_size", "n_q", "sample_rate")
ACTIVATIONS = ("ELU", "Snake")


@dataclasses.dataclass(frozen=True)
class SpeechTokenizerConfig:
  n_filters: int = 64
  strides: tuple[int, ...] = (8, 5, 4, 2)
  dimension: int = 1024
  semantic_dimension: int = 768
  bidirectional: bool = True
  dilation_base: int = 2
  residual_kernel_size: int = 3
  n_residual_layers: int = 1
  lstm_layers: int = 2
  activation: str = "ELU"
  codebook_size: int = 1024
  n_q: int = 8
  sample_rate: int = 16000
  # Port-side settings (not in the released file).
  resample: bool = True  # resample other input rates with soxr; False: reject them
  pad_multiple: int = 16000  # batch lengths are padded up to this many samples (fewer compiles)

  @property
  def hop_length(self) -> int:
    out = 1
    for s in self.strides:
      out *= s
    return out

  @classmethod
  def from_dict(cls, raw: dict, source: str = "config") -> "SpeechTokenizerConfig":
    missing = [k for k in REQUIRED_KEYS if k not in raw]
    if missing:
      raise ValueError(f"{source}: missing config key(s) {', '.join(missing)}")
    if raw["activation"] not in ACTIVATIONS:
      raise ValueError(f"{source}: activation {raw['activation']!r} is not one of {ACTIVATIONS}")
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: v for k, v in raw.items() if k in names}
    kwargs["strides"] = tuple(int(s) for s in raw["strides"])
    kwargs.setdefault("semantic_dimension", raw["dimension"])
    return cls(**kwargs)

  @classmethod
  def from_json(cls, path: str) -> "SpeechTokenizerConfig":
    try:
      with open(path) as f:
        raw = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
      raise ValueError(f"{path}: cannot read config json ({e})") from e
    return cls.from_dict(raw, source=path)

  def to_dict(self) -> dict:
    out = dataclasses.asdict(self)
    out["strides"] = list(self.strides)
    return out


def tiny_config(n_filters: int = 4) -> SpeechTokenizerConfig:
  """The tiny SpeechTokenizer: release interfaces (hop 320, 8 layers of 1024 codes), few filters,
  one LSTM layer (the trained one in data/tokenizers/ and the random ones of `load.save_random_tiny`)."""
  return SpeechTokenizerConfig(n_filters=n_filters, dimension=32, semantic_dimension=32,
                               lstm_layers=1)
