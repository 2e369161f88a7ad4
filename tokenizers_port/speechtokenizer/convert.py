"""`python -m tokenizers_port.convert speechtokenizer --torch-checkpoint PATH --config JSON --out DIR`

Reads the released layout (`SpeechTokenizer.pt`: a state dict with weight_g / weight_v keys, and
its `config.json`), folds weight norm, and writes `params.safetensors` + `config.json` to DIR.
"""

import argparse
import json
import sys

import numpy as np

from tokenizers_port.speechtokenizer.config import SpeechTokenizerConfig
from tokenizers_port.speechtokenizer.load import expected_shapes, save
from tokenizers_port.speechtokenizer.torch_keys import CheckpointError, convert_state_dict


def read_torch_state(path: str) -> dict[str, np.ndarray]:
  import torch
  try:
    state = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # torch raises many types for unreadable files
    raise CheckpointError(f"{path}: cannot read the PyTorch checkpoint ({type(e).__name__}: {e})") from e
  if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
    state = state["state_dict"]
  if not isinstance(state, dict):
    raise CheckpointError(f"{path}: expected a state dict, got {type(state).__name__}")
  return {k: v.detach().cpu().double().numpy() for k, v in state.items() if hasattr(v, "detach")}


def convert(torch_checkpoint: str, config_json: str, out_dir: str) -> SpeechTokenizerConfig:
  cfg = SpeechTokenizerConfig.from_json(config_json)
  params = convert_state_dict(read_torch_state(torch_checkpoint), cfg, expected_shapes(cfg),
                              torch_checkpoint)
  save(out_dir, cfg, params)
  return cfg


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(prog="python -m tokenizers_port.convert speechtokenizer",
                                   description="Convert a released SpeechTokenizer checkpoint to Flax.")
  parser.add_argument("--torch-checkpoint", required=True, help="SpeechTokenizer.pt (state dict)")
  parser.add_argument("--config", required=True, help="the checkpoint's config.json")
  parser.add_argument("--out", required=True, help="output directory")
  args = parser.parse_args(argv)
  try:
    cfg = convert(args.torch_checkpoint, args.config, args.out)
  except (CheckpointError, ValueError) as e:
    sys.exit(f"error: {e}")
  print(json.dumps({"out": args.out, "n_q": cfg.n_q, "dimension": cfg.dimension}))


if __name__ == "__main__":
  main()
