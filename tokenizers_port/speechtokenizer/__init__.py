"""Flax (nnx) port of SpeechTokenizer: `load(DIR)` -> tokenizer with encode / decode."""

from tokenizers_port.speechtokenizer.config import SpeechTokenizerConfig
from tokenizers_port.speechtokenizer.load import SpeechTokenizer, load

__all__ = ["SpeechTokenizer", "SpeechTokenizerConfig", "load"]
