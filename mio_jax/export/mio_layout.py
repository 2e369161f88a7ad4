"""MIO-7B's released Hugging Face layout: the vocabulary fields of its config.json and its code tokens.

MIO's config.json (m-a-p/MIO-7B-Base, MIO-7B-Instruct; shared/MIO_FACTS.md, "MIO's released
code") holds text_vocab_size 64000, num_new_special_tokens 6, visual_vocab_size 8192,
speech_vocab_size 4096 and the special ids speech_placeholder 64000 ([SPCH]), speech_eos 64001
(</spch>), image_placeholder 64002 ([IMG]), speech_bos 64003 (<spch>), image_eos 64004 (</image>),
image_bos 64005 (<image>). Its tokenizer names the codes `<img{i}>` and `<spch{code + 1024 * k}>`
(tokenization_mio.py). Which code block follows 64005 is in no config field: it is read from the
tokenizer files (the ids of `<img0>` and `<spch0>`), never assumed.

The export writes these fields (plus `speech_codebook_size`, ours: MIO's code takes SpeechTokenizer's
1024 from the speech tokenizer's config), added_tokens.json and special_tokens_map.json; the import
rebuilds config.vocab from them and fails with one line naming the file when they disagree.
"""

from __future__ import annotations

import json
import os
import re

from mio_jax.vocab import SPECIAL_TOKENS, Vocabulary

# MIO-7B's images are SEED-Tokenizer-2 codes: 32 per image block (MIO_FACTS.md).
MIO_7B_IMAGE_TOKENS = 32
SIZE_FIELDS = ("text_vocab_size", "num_new_special_tokens", "visual_vocab_size", "speech_vocab_size")
# config.json's names of SPECIAL_TOKENS, in their order (ids text_vocab_size + 0..5).
SPECIAL_FIELDS = ("speech_placeholder", "speech_eos", "image_placeholder", "speech_bos", "image_eos",
                  "image_bos")
CODEBOOK_FIELD = "speech_codebook_size"  # ours; absent in MIO's config.json
SPEECH_TOKENIZER_CODEBOOK = 1024  # tokenization_mio.py: speech_tokenizer.config codebook_size  # 1024
TOKEN_FILES = ("added_tokens.json", "tokenizer.json", "tokenizer_config.json")
_CODE_TOKEN = re.compile(r"^<(img|spch)(\d+)>$")


def config_fields(vocab: Vocabulary) -> dict:
  """MIO's vocabulary fields for config.json (MIO-7B's values for MIO-7B's layout)."""
  fields = {"text_vocab_size": vocab.text_size, "num_new_special_tokens": len(SPECIAL_TOKENS),
            "visual_vocab_size": vocab.image_codes,
            "speech_vocab_size": vocab.speech_layers * vocab.speech_codebook,
            CODEBOOK_FIELD: vocab.speech_codebook}
  fields.update({name: vocab.text_size + k for k, name in enumerate(SPECIAL_FIELDS)})
  return fields


def write_tokenizer_files(vocab: Vocabulary, out_dir: str) -> None:
  """added_tokens.json (every id past the text model: specials and codes, as a slow tokenizer saves
  its added tokens) and special_tokens_map.json (BOS, EOS, and <unk> as unk and pad, as MIO's)."""
  added = {vocab.id_to_piece(i): i for i in range(vocab.text_size, vocab.size)}
  with open(os.path.join(out_dir, "added_tokens.json"), "w") as f:
    json.dump(added, f, indent=2, ensure_ascii=False)
  unk = vocab.id_to_piece(0)
  special = {"bos_token": vocab.id_to_piece(vocab.bos), "eos_token": vocab.id_to_piece(vocab.eos),
             "unk_token": unk, "pad_token": unk}
  with open(os.path.join(out_dir, "special_tokens_map.json"), "w") as f:
    json.dump(special, f, indent=2)


def has_mio_fields(hf_config: dict) -> bool:
  return any(k in hf_config for k in SIZE_FIELDS)


def _tokens_in(path: str) -> dict[str, int]:
  """Special and code tokens -> id, from one tokenizer file (any of TOKEN_FILES)."""
  try:
    with open(path) as f:
      d = json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}: not valid JSON: {e}") from None
  name = os.path.basename(path)
  if name == "added_tokens.json":
    pairs = list(d.items())
  elif name == "tokenizer.json":
    pairs = [(t["content"], t["id"]) for t in d.get("added_tokens") or ()]
    vocab = (d.get("model") or {}).get("vocab")
    if isinstance(vocab, dict):  # BPE / WordPiece: piece -> id
      pairs += list(vocab.items())
    elif isinstance(vocab, list):  # unigram: [piece, score] at its id
      pairs += [(p[0], i) for i, p in enumerate(vocab)]
  else:
    pairs = [(t["content"], int(i)) for i, t in (d.get("added_tokens_decoder") or {}).items()]
  return {p: int(i) for p, i in pairs if p in SPECIAL_TOKENS or _CODE_TOKEN.match(p)}


def token_files(hf_dir: str) -> dict[str, dict[str, int]]:
  """Each tokenizer file in `hf_dir` that names code tokens -> its special and code tokens."""
  found = {}
  for name in TOKEN_FILES:
    path = os.path.join(hf_dir, name)
    if os.path.isfile(path):
      tokens = _tokens_in(path)
      if any(_CODE_TOKEN.match(p) for p in tokens):
        found[path] = tokens
  return found


def _check_block(path: str, tokens: dict, prefix: str, size: int, first: int) -> None:
  """`<{prefix}0>`..`<{prefix}{size-1}>` at first..first+size-1, and no larger one."""
  for n in range(size):
    got = tokens.get(f"<{prefix}{n}>")
    if got != first + n:
      where = "is missing" if got is None else f"is at id {got}"
      raise ValueError(f"{path}: <{prefix}{n}> {where}, expected {first + n} (<{prefix}0> at {first}: "
                       f"the {size} code ids must be contiguous)")
  extra = sorted(p for p in tokens if (m := _CODE_TOKEN.match(p)) and m.group(1) == prefix
                 and int(m.group(2)) >= size)
  if extra:
    raise ValueError(f"{path}: {extra[0]} is past the {size} codes config.json declares")


def _code_order(path: str, tokens: dict, codes_base: int, image: int, speech: int) -> str:
  img0, spch0 = tokens.get("<img0>"), tokens.get("<spch0>")
  if img0 is None or spch0 is None:
    raise ValueError(f"{path}: names code tokens but not both <img0> and <spch0>")
  if (img0, spch0) == (codes_base, codes_base + image):
    order = "image_first"
  elif (spch0, img0) == (codes_base, codes_base + speech):
    order = "speech_first"
  else:
    raise ValueError(f"{path}: <img0> at id {img0} and <spch0> at id {spch0}; config.json's sizes put "
                     f"the code blocks at {codes_base} ({image} image, {speech} speech ids)")
  _check_block(path, tokens, "img", image, img0)
  _check_block(path, tokens, "spch", speech, spch0)
  for k, piece in enumerate(SPECIAL_TOKENS):
    if piece in tokens and tokens[piece] != codes_base - len(SPECIAL_TOKENS) + k:
      raise ValueError(f"{path}: {piece} is at id {tokens[piece]}, config.json says "
                       f"{codes_base - len(SPECIAL_TOKENS) + k}")
  return order


def read_mio_layout(hf_dir: str, hf_config: dict) -> dict:
  """config.vocab fields from MIO's config.json fields and the tokenizer's code token ids."""
  where = os.path.join(hf_dir, "config.json")
  missing = [k for k in SIZE_FIELDS + SPECIAL_FIELDS if k not in hf_config]
  if missing:
    raise ValueError(f"{where}: has MIO's vocabulary fields but not {', '.join(missing)}")
  text, specials, image, speech = (int(hf_config[k]) for k in SIZE_FIELDS)
  if specials != len(SPECIAL_TOKENS):
    raise ValueError(f"{where}: num_new_special_tokens={specials}, MIO's layout has {len(SPECIAL_TOKENS)}")
  total = text + specials + image + speech
  if total != hf_config.get("vocab_size"):
    raise ValueError(f"{where}: text_vocab_size {text} + {specials} special + visual_vocab_size {image} + "
                     f"speech_vocab_size {speech} = {total}, but vocab_size is {hf_config.get('vocab_size')}")
  for k, name in enumerate(SPECIAL_FIELDS):
    if hf_config[name] != text + k:
      raise ValueError(f"{where}: {name}={hf_config[name]}, expected {text + k} ({SPECIAL_TOKENS[k]}: "
                       f"the special tokens follow the text ids in MIO's order)")
  codebook = int(hf_config.get(CODEBOOK_FIELD, SPEECH_TOKENIZER_CODEBOOK))
  if codebook < 1 or speech % codebook or not 1 <= speech // codebook <= 8:
    raise ValueError(f"{where}: speech_vocab_size {speech} is not 1 to 8 RVQ layers of {codebook} codes")
  files = token_files(hf_dir)
  if not files:
    raise ValueError(f"{hf_dir}: config.json has MIO's layout but no tokenizer file ({', '.join(TOKEN_FILES)}) "
                     "names <img0> and <spch0>: the order of the code blocks cannot be read")
  orders = {path: _code_order(path, tokens, text + specials, image, speech) for path, tokens in files.items()}
  if len(set(orders.values())) > 1:
    raise ValueError(f"{hf_dir}: tokenizer files disagree on the code block order: {orders}")
  return dict(text_size=text, image_codes=image, speech_codebook=codebook, speech_layers=speech // codebook,
              code_order=next(iter(orders.values())))


def check_against(layout: dict, mio: dict, layout_path: str, hf_dir: str) -> None:
  """A mio_jax.json layout must agree with the MIO fields of the same directory."""
  for key in ("text_size", "image_codes", "speech_codebook", "speech_layers", "code_order"):
    if key in layout and layout[key] != mio[key]:
      raise ValueError(f"{layout_path}: {key}={layout[key]!r}, but config.json and the tokenizer files "
                       f"of {hf_dir} give {mio[key]!r}")
