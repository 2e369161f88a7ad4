"""The unified vocabulary: SentencePiece text ids, MIO's six special tokens, then image and speech codes.

Layout (MIO-7B: text_size 64000, image_codes 8192, speech 4 x 1024 -> 76294 ids):

    [0, text_size)                    SentencePiece pieces (<unk>=0, BOS=1, EOS=2, <|im_end|>=7 in Yi)
    text_size + 0..5                  [SPCH] </spch> [IMG] <spch> </image> <image>
    then, by config.code_order        image codes (image_codes ids), speech codes
                                      (speech_layers * speech_codebook ids, id = layer*codebook + code)

Code ids read as MIO's released code names them (tokenization_mio.py): `<img{code}>` for image codes,
`<spch{layer * speech_codebook + code}>` for speech codes (`<spch0>`..`<spch4095>` in MIO-7B).

Speech as input is the content layer only, `<spch> a1..an </spch>`; speech as output is content then
the timbre layers one after another, `<spch> a1..an b1..bn c1..cn d1..dn </spch>`. Images are
`<image> codes </image>` in raster order; a video is its frames' image blocks back to back.

Text is encoded verbatim (`encode_text`): SentencePiece's dummy-prefix space and whitespace clean-up
are switched off when the model is loaded, as in Yi's model (add_dummy_prefix=False), so a text run
encodes to exactly the pieces MIO's tokenizer gives it inside its one-string prompts (a leading space
is a "▁" of the first piece, "\n" stays). `encode_with_specials` also maps literal special-token
strings (`<image>`, `<|im_end|>`, ...) to their ids, as MIO's Hugging Face tokenizer does with its
added tokens (tokenization_mio.py builds one string and tokenizes it).

Run `python -m mio_jax.vocab train --input corpus.txt --model_prefix out/sp --vocab_size 1000`
to train a small text model (see mio_jax/vocab_train.py).
"""

from __future__ import annotations

import re
import sys

import numpy as np
import sentencepiece as spm

from mio_jax.config.keys import check_known

SPECIAL_TOKENS = ("[SPCH]", "</spch>", "[IMG]", "<spch>", "</image>", "<image>")
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
CODE_ORDERS = ("image_first", "speech_first")
VOCAB_KEYS = ("text_size", "text_model", "image_codes", "speech_codebook", "speech_layers", "code_order")
# MIO's code strings (tokenization_mio.py: f"<img{i}>", f"<spch{code + 1024 * k}>").
_CODE_PIECE = re.compile(r"^<(img|spch)(0|[1-9]\d*)>$")


def vocab_size_from_config(cfg) -> int:
  """Vocabulary size from config.vocab; loads the .model file only when text_size is 0."""
  text_size = cfg["text_size"] or _load_processor(cfg["text_model"], "config.vocab.text_model").get_piece_size()
  return (int(text_size) + len(SPECIAL_TOKENS) + int(cfg["image_codes"])
          + int(cfg["speech_layers"]) * int(cfg["speech_codebook"]))


def _load_processor(path, key: str, *, verbatim: bool = False) -> spm.SentencePieceProcessor:
  if not path:
    raise ValueError(f"{key} is not set: a SentencePiece .model file is needed to tokenize text")
  sp = spm.SentencePieceProcessor()
  try:
    if "://" in str(path):  # gs://: SentencePiece opens local files only
      from mio_jax import storage
      sp.LoadFromSerializedProto(storage.as_path(path).read_bytes())
    else:
      sp.Load(str(path))
  except (OSError, RuntimeError) as e:
    raise ValueError(f"{key}={path!r}: cannot load SentencePiece model: {e}") from e
  return _verbatim(sp) if verbatim else sp


def _verbatim(sp: spm.SentencePieceProcessor) -> spm.SentencePieceProcessor:
  """The same model with no dummy-prefix space and no whitespace clean-up (Yi's settings), so each
  text run encodes exactly as written, wherever it sits in a sequence."""
  from sentencepiece import sentencepiece_model_pb2

  proto = sentencepiece_model_pb2.ModelProto()
  proto.ParseFromString(sp.serialized_model_proto())
  norm = proto.normalizer_spec
  if not (norm.add_dummy_prefix or norm.remove_extra_whitespaces):
    return sp
  norm.add_dummy_prefix = False
  norm.remove_extra_whitespaces = False
  out = spm.SentencePieceProcessor()
  out.LoadFromSerializedProto(proto.SerializeToString())
  return out


class Vocabulary:
  """Maps text, image codes and speech codes to ids of one vocabulary, and back."""

  def __init__(self, *, text_size: int | None = None, text_model: str | None = None,
               image_codes: int = 8192, speech_codebook: int = 1024, speech_layers: int = 4,
               code_order: str = "image_first"):
    if code_order == "from_init":  # a training config's: resolved against its init checkpoint first
      raise ValueError("config.vocab.code_order='from_init' names no layout by itself: build a training "
                       "config's vocabulary with mio_jax.train.code_order.training_vocab(config)")
    if code_order not in CODE_ORDERS:
      raise ValueError(f"config.vocab.code_order={code_order!r} is not one of {CODE_ORDERS}")
    if not 1 <= speech_layers <= 8:
      raise ValueError(f"config.vocab.speech_layers={speech_layers} must be in 1..8 (RVQ layers)")
    self.text_model = text_model
    self._sp = _load_processor(text_model, "config.vocab.text_model", verbatim=True) if text_model else None
    if self._sp is not None:
      pieces = self._sp.get_piece_size()
      if text_size and int(text_size) != pieces:
        raise ValueError(f"config.vocab.text_size={text_size} but {text_model} has {pieces} pieces")
      text_size = pieces
    if not text_size:
      raise ValueError("config.vocab: give text_size or text_model")
    self.text_size = int(text_size)
    self.image_codes, self.speech_codebook, self.speech_layers = image_codes, speech_codebook, speech_layers
    self.code_order = code_order
    base = self.text_size
    (self.spch_tag, self.speech_end, self.img_tag, self.speech_start, self.image_end,
     self.image_start) = range(base, base + len(SPECIAL_TOKENS))
    codes_base = base + len(SPECIAL_TOKENS)
    speech_ids = speech_layers * speech_codebook
    if code_order == "image_first":
      self.image_base, self.speech_base = codes_base, codes_base + image_codes
    else:
      self.speech_base, self.image_base = codes_base, codes_base + speech_ids
    self.size = codes_base + image_codes + speech_ids
    self._resolve_text_specials()
    self.special_ids = self._special_strings()
    # MIO's code strings are added tokens of its HF tokenizer too: <img12>, <spch5> in text are ids.
    self._special_split = re.compile(
        "(" + "|".join(re.escape(t) for t in sorted(self.special_ids, key=len, reverse=True))
        + r"|<img\d+>|<spch\d+>)")

  @classmethod
  def from_config(cls, cfg) -> "Vocabulary":
    """config.vocab, or a saved or imported layout: an unknown key is a one-line ConfigError; absent
    keys take the defaults above (MIO-7B's code layout); a training config names them all."""
    values = dict(cfg)
    check_known(values, VOCAB_KEYS, "config.vocab")
    return cls(**values)

  def _resolve_text_specials(self) -> None:
    """BOS/EOS/<|im_start|>/<|im_end|> from the text model (Yi ids 1, 2, 6, 7 without one)."""
    self.bos, self.eos, self.im_end = 1, 2, 7
    self.im_start_ids: tuple[int, ...] = (6,)
    if self._sp is None:
      return
    sp = self._sp
    self.bos = sp.bos_id() if sp.bos_id() >= 0 else 1
    self.eos = sp.eos_id() if sp.eos_id() >= 0 else 2
    single = lambda p: (i := sp.piece_to_id(p)) != sp.unk_id() and sp.id_to_piece(i) == p
    # A model without a single <|im_end|> piece stops on EOS; <|im_start|> then is several pieces.
    self.im_end = sp.piece_to_id(IM_END) if single(IM_END) else self.eos
    self.im_start_ids = (sp.piece_to_id(IM_START),) if single(IM_START) else tuple(self.encode_text(IM_START))

  # Pickling (grain worker processes): carry the model bytes, not the C++ object.
  def __getstate__(self):
    state = dict(self.__dict__)
    state["_sp"] = self._sp.serialized_model_proto() if self._sp is not None else None
    return state

  def __setstate__(self, state):
    proto = state.pop("_sp")
    self.__dict__.update(state)
    self._sp = None
    if proto is not None:
      self._sp = spm.SentencePieceProcessor()
      self._sp.LoadFromSerializedProto(proto)

  # ---- text
  def _need_sp(self) -> spm.SentencePieceProcessor:
    if self._sp is None:
      raise ValueError("config.vocab.text_model is not set: cannot tokenize text")
    return self._sp

  def encode_text(self, text: str) -> list[int]:
    """One text run, verbatim (no dummy prefix, spaces and newlines kept); no special-token lookup."""
    return self._need_sp().encode(text, out_type=int)

  def _special_strings(self) -> dict[str, int]:
    """Literal strings that stand for one id inside text: MIO's six special tokens, BOS, EOS and the
    ChatML markers when they are single pieces (all are added tokens of MIO's HF tokenizer)."""
    table = {piece: self.text_size + k for k, piece in enumerate(SPECIAL_TOKENS)}
    if self._sp is not None:
      for i in {self.bos, self.eos, self.im_end, self.im_start} - {None}:
        table[self._sp.id_to_piece(i)] = i
    return table

  def encode_with_specials(self, text: str) -> list[int]:
    """Text in which special-token and code strings (`<image>`, `<img12>`, `<spch1029>`, ...) are
    their ids; the text between them is encoded verbatim. The inverse of decode() for text encoded
    the same way, and what MIO's tokenizer gives for MIO's strings. No BOS is added."""
    ids = []
    for j, run in enumerate(self._special_split.split(text)):
      if j % 2:
        ids.append(self.special_ids[run] if run in self.special_ids else self.piece_to_id(run))
      elif run:
        ids.extend(self.encode_text(run))
    return ids

  def decode(self, ids) -> str:
    """Text ids through SentencePiece; special and code ids as their pieces."""
    out, run = [], []
    for i in map(int, ids):
      if i < self.text_size:
        run.append(i)
        continue
      if run:
        out.append(self._need_sp().decode(run))
        run = []
      out.append(self.id_to_piece(i))
    if run:
      out.append(self._need_sp().decode(run))
    return "".join(out)

  # ---- pieces (every id has one; code ids read <imgCODE> and <spch{LAYER * codebook + CODE}>, as MIO's)
  def id_to_piece(self, i: int) -> str:
    i = int(i)
    if not 0 <= i < self.size:
      raise ValueError(f"id {i} outside the vocabulary [0, {self.size})")
    if i < self.text_size:
      return self._need_sp().id_to_piece(i)
    if i < self.text_size + len(SPECIAL_TOKENS):
      return SPECIAL_TOKENS[i - self.text_size]
    modality, layer, code = self.code_of(i)
    return f"<img{code}>" if modality == "image" else f"<spch{layer * self.speech_codebook + code}>"

  def piece_to_id(self, piece: str) -> int:
    if piece in SPECIAL_TOKENS:
      return self.text_size + SPECIAL_TOKENS.index(piece)
    m = _CODE_PIECE.match(piece)
    if m:
      n = int(m.group(2))
      if m.group(1) == "img":
        return self.code_id("image", 0, n)
      if n >= self.speech_layers * self.speech_codebook:
        raise ValueError(f"piece {piece!r}: speech pieces run <spch0>..<spch"
                         f"{self.speech_layers * self.speech_codebook - 1}>")
      return self.code_id("speech", n // self.speech_codebook, n % self.speech_codebook)
    sp = self._need_sp()
    i = sp.piece_to_id(piece)
    if i == sp.unk_id() and piece != sp.id_to_piece(i):
      raise ValueError(f"piece {piece!r} is not in the vocabulary")
    return i

  @property
  def im_start(self) -> int | None:
    """The single `<|im_start|>` id, or None when the text model spells it with several pieces."""
    return self.im_start_ids[0] if len(self.im_start_ids) == 1 else None

  # ---- codes
  def modality_ranges(self) -> dict[str, tuple[int, int]]:
    """[lo, hi) ids per modality, for the per-modality losses; special tokens count as text."""
    return {"text": (0, self.text_size + len(SPECIAL_TOKENS)),
            "image": (self.image_base, self.image_base + self.image_codes),
            "speech": (self.speech_base, self.speech_base + self.speech_layers * self.speech_codebook)}

  def code_range(self, modality: str, layer: int = 0) -> tuple[int, int]:
    """[start, stop) ids of image codes, or of one speech layer (for constrained decoding)."""
    start = self.code_id(modality, layer, 0)
    return start, start + (self.image_codes if modality == "image" else self.speech_codebook)

  def code_id(self, modality: str, layer: int, code: int) -> int:
    if modality == "image":
      if layer != 0 or not 0 <= code < self.image_codes:
        raise ValueError(f"image code {code} (layer {layer}) outside [0, {self.image_codes})")
      return self.image_base + code
    if modality == "speech":
      if not 0 <= layer < self.speech_layers or not 0 <= code < self.speech_codebook:
        raise ValueError(f"speech layer {layer} code {code} outside {self.speech_layers} x "
                         f"{self.speech_codebook}")
      return self.speech_base + layer * self.speech_codebook + code
    raise ValueError(f"unknown modality {modality!r}")

  def code_of(self, i: int) -> tuple[str, int, int]:
    """(modality, layer, code) of a code id; ValueError for text or special ids."""
    i = int(i)
    if self.image_base <= i < self.image_base + self.image_codes:
      return ("image", 0, i - self.image_base)
    off = i - self.speech_base
    if 0 <= off < self.speech_layers * self.speech_codebook:
      return ("speech", off // self.speech_codebook, off % self.speech_codebook)
    raise ValueError(f"id {i} is not a code id")

  def _check_codes(self, codes: np.ndarray, limit: int, what: str) -> np.ndarray:
    codes = np.asarray(codes, dtype=np.int32)
    if codes.size and (codes.min() < 0 or codes.max() >= limit):
      raise ValueError(f"{what} codes outside [0, {limit}): min {codes.min()} max {codes.max()}")
    return codes

  def image_ids(self, codes: np.ndarray) -> np.ndarray:
    """`<image>` + raster-order codes of an [h, w] grid + `</image>`."""
    codes = self._check_codes(codes, self.image_codes, "image")
    return np.concatenate([[self.image_start], self.image_base + codes.ravel(),
                           [self.image_end]]).astype(np.int32)

  def video_ids(self, codes: np.ndarray) -> np.ndarray:
    """Frames [frames, h, w] as consecutive image blocks, no separators between frames."""
    return np.concatenate([self.image_ids(frame) for frame in codes]).astype(np.int32)

  def speech_ids(self, codes: np.ndarray, *, output: bool) -> np.ndarray:
    """Speech [layers>=speech_layers, frames]: content only as input; all kept layers as output."""
    codes = self._check_codes(codes, self.speech_codebook, "speech")
    layers = self.speech_layers if output else 1
    if codes.shape[0] < layers:
      raise ValueError(f"speech codes have {codes.shape[0]} layers, {layers} needed")
    offsets = self.speech_base + np.arange(layers, dtype=np.int32)[:, None] * self.speech_codebook
    body = (codes[:layers] + offsets).ravel()  # a1..an b1..bn ...: layer-major
    return np.concatenate([[self.speech_start], body, [self.speech_end]]).astype(np.int32)

  def speech_codes(self, ids) -> np.ndarray:
    """Inverse of speech_ids(output=True) body: ids -> [layers, frames] (needs equal-length parts)."""
    ids = np.asarray([int(i) for i in ids if i not in (self.speech_start, self.speech_end)])
    if ids.size % self.speech_layers:
      raise ValueError(f"{ids.size} speech ids do not split into {self.speech_layers} equal parts")
    return (ids - self.speech_base).reshape(self.speech_layers, -1) % self.speech_codebook


if __name__ == "__main__":
  if len(sys.argv) > 1 and sys.argv[1] == "train":
    from mio_jax import vocab_train
    vocab_train.main(sys.argv[2:])
  else:
    sys.exit("usage: python -m mio_jax.vocab train --input FILE [...] --model_prefix PREFIX "
             "--vocab_size N")
