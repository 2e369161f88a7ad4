"""Convert released PyTorch tokenizer checkpoints to Flax weights plus a config file.

  python -m tokenizers_port.convert vqgan --flavor taming|llamagen --torch-checkpoint PATH --out DIR
  python -m tokenizers_port.convert speechtokenizer --torch-checkpoint PATH --config CONFIG_JSON --out DIR
  python -m tokenizers_port.convert seed --torch-checkpoint seed_quantizer.pt --vit-checkpoint eva_vit_g.pth --out DIR
  python -m tokenizers_port.convert siglip --hf HF_FOLDER --out DIR
  python -m tokenizers_port.convert siglip --big-vision CKPT.npz --res 384 [--variant So400m/14] --out DIR

Each tokenizer family owns its converter (`tokenizers_port.<family>.convert.main(argv)`); this module
only dispatches on the first argument.
"""

import importlib
import sys

FAMILIES = ("vqgan", "speechtokenizer", "seed", "siglip")


def main(argv: list[str] | None = None) -> None:
  argv = sys.argv[1:] if argv is None else argv
  if not argv or argv[0] not in FAMILIES:
    sys.exit(f"usage: python -m tokenizers_port.convert {{{','.join(FAMILIES)}}} [options]")
  family = importlib.import_module(f"tokenizers_port.{argv[0]}.convert")
  family.main(argv[1:])


if __name__ == "__main__":
  main()
