"""PyTorch reference modules of SEED-Tokenizer-2's encoder, copied from MIO's repository for the
port's tests (CI has no network and no mirror). Each file names its source, commit, license and
the patches made so it imports without timm / lavis / network access. `build.py` assembles a
reduced-width Blip2QformerQuantizer from them."""
