"""A frozen dataclass config as `config.json`, shared by the image tokenizer ports: a mixin for
to_json / from_dict (unknown keys rejected, JSON lists back to tuples) and the file save / load."""

import dataclasses
import json
import os
from typing import ClassVar

CONFIG_FILE = "config.json"


class JsonConfig:
  """Mixin for a frozen dataclass config; LABEL names the tokenizer in errors ("VQGAN", "SEED")."""
  LABEL: ClassVar[str]

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), indent=2)

  @classmethod
  def from_dict(cls, d: dict, source: str = "config"):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
      raise ValueError(f"{source}: unknown {cls.LABEL} config key {unknown[0]!r}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def save_config(config: JsonConfig, directory: str) -> str:
  path = os.path.join(directory, CONFIG_FILE)
  with open(path, "w") as f:
    f.write(config.to_json() + "\n")
  return path


def load_config(cls: type, directory: str, command: str):
  """The `cls` config stored in `directory`; a missing file names `tokenizers_port.convert <command>`."""
  path = os.path.join(directory, CONFIG_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: no {cls.LABEL} config (run tokenizers_port.convert {command} first)")
  with open(path) as f:
    return cls.from_dict(json.load(f), source=path)
