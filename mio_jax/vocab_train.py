"""Train a small SentencePiece text model with Yi's special-id layout (for small runs and tests).

    python -m mio_jax.vocab train --input corpus.txt [more.txt ...] --model_prefix out/sp --vocab_size 1000

Input files are plain text, one sentence per line, or .jsonl whose "text"/"caption"/"transcript"/
"description" fields (and the text of "parts" and chat "messages") are used. Ids 0-2 are <unk>, <|startoftext|> (BOS), <|endoftext|> (EOS) as in
Yi; ids 3-8 are user-defined symbols so that <|im_start|> is 6 and <|im_end|> is 7, each a single
piece that ChatML text encodes to. Byte fallback keeps any text encodable.
A released model (e.g. Yi's tokenizer.model) needs no training: point config.vocab.text_model at it.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

import sentencepiece as spm

# Yi ids 3..8; 6 and 7 are the ChatML markers. The names of 3, 4, 5 and 8 are placeholders.
USER_SYMBOLS = ("<|reserved_3|>", "<|reserved_4|>", "<|reserved_5|>", "<|im_start|>", "<|im_end|>",
                "<|im_sep|>")
_JSON_TEXT_KEYS = ("text", "caption", "transcript", "description")


def _json_texts(obj):
  """Text fields of a mini-corpus record, including interleaved parts and chat messages."""
  if isinstance(obj, list):
    for item in obj:
      yield from _json_texts(item)
  elif isinstance(obj, dict):
    for key in _JSON_TEXT_KEYS + ("content",):
      if isinstance(obj.get(key), str):
        yield obj[key]
    for key in ("parts", "messages", "content"):
      if isinstance(obj.get(key), list):
        yield from _json_texts(obj[key])


def _lines(path: str):
  with open(path, encoding="utf-8") as f:
    for line in f:
      line = line.strip()
      if not line:
        continue
      if path.endswith(".jsonl"):
        yield from _json_texts(json.loads(line))
      else:
        yield line


def train_text_model(inputs: list[str], model_prefix: str, vocab_size: int, *,
                     model_type: str = "bpe") -> str:
  """Trains and writes `model_prefix`.model (and .vocab); returns the .model path."""
  os.makedirs(os.path.dirname(os.path.abspath(model_prefix)), exist_ok=True)
  with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as tmp:
    for path in inputs:
      for line in _lines(path):
        tmp.write(line + "\n")
  try:
    # A small corpus can run out of merges before vocab_size: fill the gap with reserved symbols
    # (as Yi reserves ids), so the model has exactly vocab_size pieces and config.vocab.text_size
    # can be fixed in advance.
    extra = 0
    for _ in range(4):
      _train(tmp.name, model_prefix, vocab_size, model_type, extra)
      pieces = spm.SentencePieceProcessor(model_file=model_prefix + ".model").get_piece_size()
      if pieces >= vocab_size:
        break
      extra += vocab_size - pieces
  finally:
    os.unlink(tmp.name)
  return model_prefix + ".model"


def _train(corpus: str, model_prefix: str, vocab_size: int, model_type: str, extra: int) -> None:
  reserved = [f"<|reserved_{i}|>" for i in range(9, 9 + extra)]
  spm.SentencePieceTrainer.train(
    input=corpus, model_prefix=model_prefix, vocab_size=vocab_size, model_type=model_type,
    unk_id=0, bos_id=1, eos_id=2, pad_id=-1, unk_piece="<unk>",
    bos_piece="<|startoftext|>", eos_piece="<|endoftext|>",
    user_defined_symbols=list(USER_SYMBOLS) + reserved, byte_fallback=True, character_coverage=1.0,
    # As Llama/Yi: no normalization and whitespace kept, so ChatML's newlines survive.
    normalization_rule_name="identity", remove_extra_whitespaces=False, split_digits=True,
    hard_vocab_limit=False, num_threads=1, minloglevel=2)


def main(argv: list[str] | None = None) -> None:
  p = argparse.ArgumentParser(prog="python -m mio_jax.vocab train", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--input", nargs="+", required=True, help="text or .jsonl files")
  p.add_argument("--model_prefix", required=True)
  p.add_argument("--vocab_size", type=int, required=True)
  p.add_argument("--model_type", default="bpe", choices=("bpe", "unigram"))
  args = p.parse_args(argv)
  path = train_text_model(args.input, args.model_prefix, args.vocab_size, model_type=args.model_type)
  sp = spm.SentencePieceProcessor(model_file=path)
  print(f"wrote {path}: {sp.get_piece_size()} pieces (set config.vocab.text_size to this)")


if __name__ == "__main__":
  main()
