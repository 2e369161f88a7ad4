"""Stage 4: see configs/base.py for sizes. `--config=configs/stage4.py:smoke` for the CPU smoke run."""

from configs.base import stage_config


def get_config(arg: str = ""):
  return stage_config(4, arg)
