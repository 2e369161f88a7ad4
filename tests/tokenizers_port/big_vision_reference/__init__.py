"""big_vision's ViT (the SigLIP image tower), vendored from google-research/big_vision for the
SigLIP port's tests: the independent oracle of the `--big-vision` converter. Each file names its
source commit and the patches made (imports only) so it runs without TensorFlow or network access."""
