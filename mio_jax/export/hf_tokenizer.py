"""The Hugging Face tokenizer for an exported checkpoint: our SentencePiece text model plus every
special and code token of the unified vocabulary, at exactly our ids.

The SentencePiece model becomes a `tokenizers` pipeline that repeats what Vocabulary.encode_text
does (SentencePiece's precompiled normaliser, BPE or unigram with byte fallback; text verbatim: no
dummy prefix, no whitespace clean-up, as Yi's model); the six MIO tokens and the code tokens
(`<imgCODE>`, `<spch{LAYER * 1024 + CODE}>`, MIO's names, from `Vocabulary.id_to_piece`) are
added tokens that keep the whitespace next to them. That is how MIO's own tokenizer treats its one-string prompts
(tokenization_mio.py) and how our data pipeline encodes a sample (mio_jax/data/text_runs.py). So

    "<image><img3><img9></image> The caption of this image is a cat"

encodes to BOS + image ids + encode_text(" The caption of this image is a cat"), as in training.
"""

from __future__ import annotations

import os

from tokenizers import AddedToken, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE, Unigram

from mio_jax import storage
from mio_jax.vocab import Vocabulary

_UNIGRAM, _BPE = 1, 2
_CONTROL, _USER_DEFINED = 3, 4


def _load_proto(sp_model: str):
  from transformers.convert_slow_tokenizer import import_protobuf

  proto = import_protobuf().ModelProto()
  proto.ParseFromString(storage.as_path(sp_model).read_bytes())  # local or gs://
  return proto


def text_tokenizer(sp_model: str) -> Tokenizer:
  """A `tokenizers.Tokenizer` that encodes text as the SentencePiece model `sp_model` does."""
  proto = _load_proto(sp_model)
  trainer, norm = proto.trainer_spec, proto.normalizer_spec
  if trainer.treat_whitespace_as_suffix or not norm.escape_whitespaces:
    raise ValueError(f"{sp_model}: treat_whitespace_as_suffix / unescaped whitespace is not supported")
  pieces = [(p.piece, p.score) for p in proto.pieces]
  if trainer.model_type == _BPE:
    from transformers.convert_slow_tokenizer import SentencePieceExtractor

    extracted = SentencePieceExtractor(sp_model).extract(BPE)
    model = BPE(extracted["vocab"], extracted["merges"], unk_token=trainer.unk_piece, fuse_unk=True,
                byte_fallback=trainer.byte_fallback, dropout=None)
  elif trainer.model_type == _UNIGRAM:
    model = Unigram(pieces, unk_id=trainer.unk_id, byte_fallback=trainer.byte_fallback)
  else:
    raise ValueError(f"{sp_model}: SentencePiece model type {trainer.model_type} is not BPE or unigram")
  tok = Tokenizer(model)

  # SentencePiece's order: character map, then spaces to "▁". The whitespace clean-up and the dummy
  # prefix stay off, as Vocabulary switches them off (text is encoded verbatim).
  steps = []
  if norm.precompiled_charsmap:
    steps.append(normalizers.Precompiled(norm.precompiled_charsmap))
  steps.append(normalizers.Replace(" ", "▁"))
  tok.normalizer = normalizers.Sequence(steps)
  splits = []
  if trainer.split_by_whitespace:
    splits.append(pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True))
  if trainer.split_digits:
    splits.append(pre_tokenizers.Digits(individual_digits=True))
  if splits:
    tok.pre_tokenizer = pre_tokenizers.Sequence(splits)
  tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])

  # Control (BOS, EOS) and user-defined pieces (<|im_start|>, ...) are added tokens: the text
  # between them is encoded run by run, as our pipeline encodes ChatML (Vocabulary.encode_with_specials).
  tok.add_tokens([AddedToken(p.piece, normalized=False, special=p.type == _CONTROL)
                  for p in proto.pieces if p.type in (_CONTROL, _USER_DEFINED)])
  return tok


def multimodal_tokenizer(vocab: Vocabulary) -> Tokenizer:
  """The text tokenizer plus the special and code tokens at ids [text_size, vocab.size)."""
  if not vocab.text_model:
    raise ValueError("config.vocab.text_model is not set: the HF tokenizer needs the SentencePiece model")
  tok = text_tokenizer(vocab.text_model)
  if tok.get_vocab_size(with_added_tokens=False) != vocab.text_size:
    raise ValueError(f"{vocab.text_model}: {tok.get_vocab_size(False)} pieces, vocabulary says "
                     f"text_size={vocab.text_size}")
  extra = [AddedToken(vocab.id_to_piece(i), normalized=False, special=True, lstrip=False, rstrip=False)
           for i in range(vocab.text_size, vocab.size)]
  tok.add_special_tokens(extra)
  for i in (vocab.text_size, vocab.image_base, vocab.speech_base, vocab.size - 1):
    piece = vocab.id_to_piece(i)
    if tok.token_to_id(piece) != i:
      raise ValueError(f"HF tokenizer put {piece!r} at id {tok.token_to_id(piece)}, ours is {i}")
  bos = vocab.id_to_piece(vocab.bos)
  tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                     special_tokens=[(bos, vocab.bos)])
  return tok


def save_hf_tokenizer(vocab: Vocabulary, out_dir: str, *, model_max_length: int = 4096) -> None:
  """Writes tokenizer.json, tokenizer_config.json (AutoTokenizer-loadable), tokenizer.model, and
  MIO's added_tokens.json and special_tokens_map.json (mio_layout.py)."""
  from transformers import PreTrainedTokenizerFast

  from mio_jax.export.mio_layout import write_tokenizer_files

  tok = multimodal_tokenizer(vocab)
  unk = vocab.id_to_piece(0)
  hf = PreTrainedTokenizerFast(
      tokenizer_object=tok, bos_token=vocab.id_to_piece(vocab.bos),
      eos_token=vocab.id_to_piece(vocab.eos), unk_token=unk, pad_token=unk,  # pad <unk> 0, as MIO's
      model_max_length=model_max_length, clean_up_tokenization_spaces=False)
  hf.save_pretrained(out_dir)
  write_tokenizer_files(vocab, out_dir)
  with open(os.path.join(out_dir, "tokenizer.model"), "wb") as f:  # out_dir is local (to_hf stages)
    f.write(storage.as_path(vocab.text_model).read_bytes())
