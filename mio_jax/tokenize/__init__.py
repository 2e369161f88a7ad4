"""Offline tokenization: raw media and text -> token shards (see docs/tokenization.md).

manifests (inputs -> RawSample) -> media (decode, filter) -> build (batched encoders, one shard)
-> job (plan, process split, atomic commits, index, quarantine, resume).
"""
