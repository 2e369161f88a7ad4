"""`mio_jax.json` in an exported checkpoint: the vocabulary layout, so the modalities can be decoded
from a Hugging Face checkpoint alone (which ids are image codes, which speech codes and in what
RVQ layer order), and so `import_hf` rebuilds the same Vocabulary. It also carries the run's data
facts (`run_data`: codes per image block, the template set), so an imported checkpoint generates
blocks of the tokenizer it trained on and is prompted in its wording.
"""

from __future__ import annotations

import json
import os

from mio_jax.vocab import SPECIAL_TOKENS, Vocabulary

LAYOUT_FILE = "mio_jax.json"
FORMAT = "mio_jax.vocab_layout/1"
# SpeechTokenizer RVQ layers kept by MIO: 1 is content (semantic), 2-4 timbre (MIO_FACTS.md).
SPEECH_LAYER_NAMES = ("content (RVQ 1)", "timbre (RVQ 2)", "timbre (RVQ 3)", "timbre (RVQ 4)",
                      "RVQ 5", "RVQ 6", "RVQ 7", "RVQ 8")


RUN_DATA_KEYS = ("image_tokens", "template_set")


def layout_dict(vocab: Vocabulary, run_data: dict | None = None) -> dict:
  layout = {
      "format": FORMAT,
      "vocab_size": vocab.size,
      "text_size": vocab.text_size,
      "text_model": "tokenizer.model" if vocab.text_model else None,
      "bos_id": vocab.bos, "eos_id": vocab.eos, "im_end_id": vocab.im_end,
      "im_start_ids": list(vocab.im_start_ids),
      "special_tokens": {p: vocab.text_size + i for i, p in enumerate(SPECIAL_TOKENS)},
      "code_order": vocab.code_order,
      "image": {"first_id": vocab.image_base, "codes": vocab.image_codes, "piece": "<img{code}>",
                "id": "first_id + code", "layout": "<image> raster-order codes </image>; "
                "video = frames' image blocks back to back"},
      "speech": {"first_id": vocab.speech_base, "codebook": vocab.speech_codebook,
                 "layers": vocab.speech_layers, "piece": "<spch{layer * codebook + code}>",
                 "id": "first_id + layer * codebook + code",
                 "layer_order": list(SPEECH_LAYER_NAMES[:vocab.speech_layers]),
                 "input": "<spch> content layer only </spch>",
                 "output": "<spch> all layers, layer-major (a1..an b1..bn ...) </spch>"},
  }
  run_data = {k: v for k, v in (run_data or {}).items() if k in RUN_DATA_KEYS}
  if run_data:
    layout["run_data"] = run_data
  return layout


def write_layout(vocab: Vocabulary, out_dir: str, run_data: dict | None = None) -> str:
  path = os.path.join(out_dir, LAYOUT_FILE)
  with open(path, "w") as f:
    json.dump(layout_dict(vocab, run_data), f, indent=2)
  return path


def read_run_data(path: str) -> dict:
  """The run data facts a mio_jax.json carries ({} when none: exports written before them)."""
  if os.path.isdir(path):
    path = os.path.join(path, LAYOUT_FILE)
  if not os.path.isfile(path):
    return {}
  with open(path) as f:
    return {k: v for k, v in json.load(f).get("run_data", {}).items() if k in RUN_DATA_KEYS}


def read_layout(path: str) -> dict:
  """config.vocab fields from a mio_jax.json (a file, or a directory holding one)."""
  if os.path.isdir(path):
    path = os.path.join(path, LAYOUT_FILE)
  with open(path) as f:
    d = json.load(f)
  if "text_size" not in d:
    raise ValueError(f"{path}: no text_size: not a mio_jax vocabulary layout")
  if d.get("format") != FORMAT:  # a plain config.vocab dict is accepted as well
    return {k: d[k] for k in ("text_size", "text_model", "image_codes", "speech_codebook",
                              "speech_layers", "code_order") if k in d}
  text_model = d.get("text_model")
  if text_model and not os.path.isabs(text_model):
    text_model = os.path.join(os.path.dirname(os.path.abspath(path)), text_model)
  if text_model and not os.path.isfile(text_model):
    text_model = None  # the layout still holds; text needs --text_model then
  return dict(text_size=d["text_size"], text_model=text_model, image_codes=d["image"]["codes"],
              speech_codebook=d["speech"]["codebook"], speech_layers=d["speech"]["layers"],
              code_order=d["code_order"])
