"""`config.vocab.code_order = "from_init"`: a run's code layout taken from the checkpoint it starts from.

Which code block (image or speech) follows the six special tokens is a property of a checkpoint:
an import records the one its tokenizer has (mio_jax/export/mio_layout.py), a training run the one
it trained with, both in `model_config.json` (mio_jax/train/run_config.py). "from_init" (the
default in configs/base.py) means: the layout recorded by the checkpoint named by config.init_from
(or runs_dir/previous_run); "image_first" when the run starts from scratch or from a text-only
checkpoint, whose code rows start new in any order. An explicit "image_first" / "speech_first"
stays as given, and one that disagrees with the init checkpoint is refused by
run_config.check_init_vocab.

`training_vocab(config)` is how every part of training (validation, the data pipeline, the train
step's modality ranges, evaluation) builds its Vocabulary, so all see one order; `train()` also
replaces the value by the concrete order once (`with_concrete_code_order`, logged), so the run's
saved model_config.json, and the export, generation or next stage that reads it, see no "from_init".
"""

from __future__ import annotations

import copy
import logging

from mio_jax.train.run_config import FROM_INIT, RUN_CONFIG, find_run_config, resolve_init_from
from mio_jax.vocab import CODE_ORDERS, Vocabulary

log = logging.getLogger("mio_jax.train")

WITHOUT_INIT = "image_first"  # a fresh run's order (MIO-7B's is unpublished: MIO_FACTS.md)


def check_code_order_value(order: str) -> str:
  if order not in CODE_ORDERS + (FROM_INIT,):
    raise ValueError(f"config.vocab.code_order={order!r} is not one of {CODE_ORDERS + (FROM_INIT,)}")
  return order


def recorded_code_order(init_from: str) -> str | None:
  """The code order `init_from`'s model_config.json records; None when it records no codes (a
  text-only import) or has no model_config.json."""
  saved = (find_run_config(init_from) or {}).get("vocab") or {}
  if "image_codes" not in saved:
    return None
  return saved.get("code_order", WITHOUT_INIT)  # Vocabulary's default when a layout omits it


def resolve_code_order(config) -> tuple[str, str]:
  """(the concrete code order, where it comes from) for a training config.

  A config holding only the pipeline's sections (vocab, data) has no init checkpoint.
  """
  order = check_code_order_value(config["vocab"]["code_order"])
  if order in CODE_ORDERS:
    return order, "config.vocab.code_order"
  init_from = resolve_init_from(config) if "init_from" in config else ""
  if not init_from:
    return WITHOUT_INIT, "no init checkpoint (config.init_from is empty)"
  recorded = recorded_code_order(init_from)
  if recorded is None:
    return WITHOUT_INIT, f"{init_from} records no code layout in a {RUN_CONFIG} (a text-only start)"
  return recorded, f"from {init_from}/{RUN_CONFIG}"


def concrete_vocab(config) -> dict:
  """config.vocab as a dict, code_order resolved."""
  vocab = config["vocab"]
  values = vocab.to_dict() if hasattr(vocab, "to_dict") else dict(vocab)
  if "code_order" in values:  # a saved layout may leave it out (Vocabulary's default)
    values["code_order"] = resolve_code_order(config)[0]
  return values


def training_vocab(config) -> Vocabulary:
  """The Vocabulary of a training config (its code order resolved)."""
  return Vocabulary.from_config(concrete_vocab(config))


def with_concrete_code_order(config):
  """A copy of `config` with config.vocab.code_order concrete; logs the choice when it was "from_init"."""
  order, source = resolve_code_order(config)
  if config.vocab.code_order == order:
    return config
  out = copy.deepcopy(config)  # the caller's config keeps "from_init" (a rerun resolves it again)
  out.vocab.code_order = order
  log.info("config.vocab.code_order=%s: %s, %s", FROM_INIT, order, source)
  return out
