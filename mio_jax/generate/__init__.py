"""Autoregressive generation: KV-cache decoding, sampling, modality-constrained decoding."""
