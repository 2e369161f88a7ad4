"""MIO-7B's released Hugging Face layout, both ways: a transformers checkpoint with MIO's config.json
fields and added_tokens.json imports with no flags (either code block order), and our export
writes that layout (config.json fields, `<imgN>`/`<spchN>` tokens) for transformers and MIO's parsing.

The MIO-style files are written here by hand from shared/MIO_FACTS.md ("MIO's released code"),
not by the code under test; the text model is the 1000-piece mini model (MIO-7B: Yi's 64000).
"""

import json
import os
import re
import shutil

import numpy as np
import pytest

from export_helpers import (MINI_TEXT_MODEL, TINY, TINY_VOCAB, assert_logits_match, launch_module,
                            load_hf_model, make_hf_checkpoint, random_params, read_params, run_config,
                            save_our_checkpoint)
from mio_jax.export.from_hf import import_hf
from mio_jax.export.mio_layout import config_fields
from mio_jax.train.run_config import save_run_config
from mio_jax.vocab import Vocabulary

ORDERS = ("image_first", "speech_first")
TEXT = 1000
# MIO's config.json special ids, at text_vocab_size + 0..5 (MIO-7B: 64000..64005).
MIO_SPECIALS = [("speech_placeholder", "[SPCH]"), ("speech_eos", "</spch>"), ("image_placeholder", "[IMG]"),
                ("speech_bos", "<spch>"), ("image_eos", "</image>"), ("image_bos", "<image>")]


def mio_config_fields(text=TEXT):
  fields = dict(text_vocab_size=text, num_new_special_tokens=6, visual_vocab_size=8192, speech_vocab_size=4096)
  fields.update({name: text + k for k, (name, _) in enumerate(MIO_SPECIALS)})
  return fields


def mio_added_tokens(order, text=TEXT):
  """added_tokens.json: the six specials, then `<img{i}>` x 8192 and `<spch{code + 1024 k}>` x 4096
  (tokenization_mio.py's strings) in `order`."""
  tokens = {piece: text + k for k, (_, piece) in enumerate(MIO_SPECIALS)}
  blocks = {"image_first": [("img", 8192), ("spch", 4096)], "speech_first": [("spch", 4096), ("img", 8192)]}
  start = text + 6
  for prefix, size in blocks[order]:
    tokens.update({f"<{prefix}{n}>": start + n for n in range(size)})
    start += size
  return tokens


def write_json(path, d):
  with open(path, "w") as f:
    json.dump(d, f)


def read_json(path):
  with open(path) as f:
    return json.load(f)


@pytest.fixture(scope="module")
def mio_hf(tmp_path_factory):
  """order -> a transformers tiny Llama in MIO's layout (config fields, added_tokens.json, tokenizer.model)."""
  dirs = {}
  for k, order in enumerate(ORDERS):
    path = make_hf_checkpoint(tmp_path_factory.mktemp(f"mio_{order}"), vocab_size=TINY.vocab_size, seed=10 + k)
    config = read_json(os.path.join(path, "config.json"))
    write_json(os.path.join(path, "config.json"), {**config, **mio_config_fields()})
    write_json(os.path.join(path, "added_tokens.json"), mio_added_tokens(order))
    shutil.copyfile(MINI_TEXT_MODEL, os.path.join(path, "tokenizer.model"))
    dirs[order] = path
  return dirs


@pytest.fixture(scope="module")
def imported(mio_hf, tmp_path_factory):
  """order -> OUT of `launch/import_hf.py --hf DIR --out OUT` (no other flag)."""
  outs = {}
  for order, hf in mio_hf.items():
    outs[order] = str(tmp_path_factory.mktemp(f"imported_{order}") / "out")
    launch_module("import_hf").main(["--hf", hf, "--out", outs[order]])
  return outs


@pytest.mark.parametrize("order", ORDERS)
def test_import_reads_mio_layout_and_keeps_logits(mio_hf, imported, order):
  saved = read_json(os.path.join(imported[order], "model_config.json"))
  assert {k: v for k, v in saved["vocab"].items() if k != "text_model"} == dict(
      text_size=TEXT, image_codes=8192, speech_codebook=1024, speech_layers=4, code_order=order)
  vocab = Vocabulary.from_config(saved["vocab"])
  added = mio_added_tokens(order)
  first = {"image_first": (1006, 1006 + 8192), "speech_first": (1006 + 4096, 1006)}[order]
  assert (vocab.piece_to_id("<img5>"), vocab.piece_to_id("<spch1029>")) == (first[0] + 5, first[1] + 1029)
  for piece in ("<img0>", "<img5>", "<img8191>", "<spch0>", "<spch1029>", "<spch4095>", "<image>", "</spch>"):
    assert vocab.piece_to_id(piece) == added[piece], piece
  assert vocab.code_of(added["<spch1029>"]) == ("speech", 1, 5)
  assert saved["data"] == {"image_tokens": 32}  # MIO's release: SEED-Tokenizer-2 blocks
  assert_logits_match(read_params(imported[order]), TINY, load_hf_model(mio_hf[order]), np.random.default_rng(2))


@pytest.mark.slow  # generation compiles; the import's logits stay
@pytest.mark.parametrize("order", ORDERS)
def test_generate_from_import_puts_codes_in_the_layouts_block(imported, order, tmp_path):
  cli = launch_module("generate")
  args = cli.parse_args(["--checkpoint", imported[order], "--prompt", "a red square <image>",
                         "--image_tokens", "4", "--max_new_tokens", "8", "--out_prefix", str(tmp_path / "g")])
  ids = np.asarray(cli.run(args)["ids"])
  image = {"image_first": 1006, "speech_first": 1006 + 4096}[order]
  assert np.all((ids[:4] >= image) & (ids[:4] < image + 8192)) and ids[4] == 1004  # </image>


def _stage4_from(init_from):
  """configs/stage4.py:smoke with only --config.init_from set (and a tiny batch): no layout flag."""
  from configs.base import stage_config

  c = stage_config(4, "smoke")
  c.vocab.text_model = MINI_TEXT_MODEL
  c.data.update(seq_len=32, global_batch=8)
  c.train.update(steps=2, log_every=1, checkpoint_every=2)
  c.init_from = init_from
  return c


@pytest.mark.parametrize("order", ORDERS)
def test_stage4_config_takes_the_imports_code_order(imported, order):
  from fake_devices import cpu_devices

  from mio_jax.train.code_order import training_vocab
  from mio_jax.train.validate import validate

  c = _stage4_from(imported[order])
  assert c.vocab.code_order == "from_init"
  validate(c, cpu_devices(1))
  added = mio_added_tokens(order)  # the import's own tokenizer: the oracle for every id
  vocab = training_vocab(c)
  assert [vocab.piece_to_id(p) for p in ("<img0>", "<img8191>", "<spch0>", "<spch4095>")] == [
      added[p] for p in ("<img0>", "<img8191>", "<spch0>", "<spch4095>")]


@pytest.mark.slow  # compiles and runs the stage-4 train step (60-120 s per order on 2 CPU cores)
@pytest.mark.parametrize("order", ORDERS)
def test_stage4_trains_from_import(imported, order, tmp_path):
  from mio_jax.train.loop import train

  workdir = str(tmp_path / "stage4")
  losses = train(_stage4_from(imported[order]), workdir).losses
  assert sorted(losses) == [1, 2] and all(np.isfinite(list(losses.values())))
  # The run records the concrete order, so export, generate and the next stage read it as is.
  assert read_json(os.path.join(workdir, "model_config.json"))["vocab"]["code_order"] == order


def test_training_on_the_other_code_order_is_refused(imported):
  import ml_collections

  from mio_jax.train.run_config import check_init_vocab

  c = ml_collections.ConfigDict(dict(vocab=dict(TINY_VOCAB, code_order="image_first")))
  check_init_vocab(c, imported["image_first"], "config.init_from")
  with pytest.raises(ValueError, match=r"config.vocab.code_order='image_first', but config.init_from=.* has "
                                       r"'speech_first' .*--config.vocab.code_order=speech_first \(or from_init"):
    check_init_vocab(c, imported["speech_first"], "config.init_from")


def _broken(hf, tmp_path, edit):
  bad = str(tmp_path / "bad")
  shutil.copytree(hf, bad)
  edit(bad)
  return bad


def _edit_json(name, change):
  def edit(d):
    path = os.path.join(d, name)
    write_json(path, change(read_json(path)))
  return edit


def _swap(tokens, a, b):
  tokens[a], tokens[b] = tokens[b], tokens[a]
  return tokens


@pytest.mark.parametrize("edit,message", [
    (_edit_json("config.json", lambda c: {**c, "visual_vocab_size": 8000}),
     r"config.json: text_vocab_size 1000 \+ 6 special \+ visual_vocab_size 8000 \+ speech_vocab_size 4096 = "
     r"13102, but vocab_size is 13294"),
    (_edit_json("config.json", lambda c: {**c, "image_bos": 1004}), r"config.json: image_bos=1004, expected 1005"),
    (_edit_json("config.json", lambda c: {k: v for k, v in c.items() if k != "speech_eos"}),
     r"config.json: has MIO's vocabulary fields but not speech_eos"),
    (_edit_json("added_tokens.json", lambda t: _swap(t, "<img5>", "<img6>")),
     r"added_tokens.json: <img5> is at id 1012, expected 1011 .*contiguous"),
    (_edit_json("added_tokens.json", lambda t: {k: v for k, v in t.items() if k != "<spch77>"}),
     r"added_tokens.json: <spch77> is missing, expected 9275"),
    (_edit_json("added_tokens.json", lambda t: {**t, "<img0>": 5}),
     r"added_tokens.json: <img0> at id 5 and <spch0> at id 9198"),
    (_edit_json("added_tokens.json", lambda t: {**t, "<img8192>": 13294}),
     r"added_tokens.json: <img8192> is past the 8192 codes"),
    (lambda d: os.remove(os.path.join(d, "added_tokens.json")), r"no tokenizer file .* names <img0> and <spch0>"),
    (_edit_json("config.json", lambda c: {k: v for k, v in c.items() if k not in mio_config_fields()}),
     r"added_tokens.json names code tokens .*/config.json has no text_vocab_size.* pass --vocab_config"),
    (lambda d: write_json(os.path.join(d, "tokenizer_config.json"), {"added_tokens_decoder": {
        str(i): {"content": p} for p, i in mio_added_tokens("speech_first").items()}}),
     r"tokenizer files disagree on the code block order"),
    (lambda d: write_json(os.path.join(d, "mio_jax.json"), {"text_size": 1000, "code_order": "speech_first"}),
     r"mio_jax.json: code_order='speech_first', but config.json and the tokenizer files .* give 'image_first'"),
])
def test_inconsistent_layout_fails_naming_the_file(mio_hf, tmp_path, edit, message):
  bad = _broken(mio_hf["image_first"], tmp_path, edit)
  with pytest.raises(ValueError, match=message):
    import_hf(bad, str(tmp_path / "out"))
  with pytest.raises(SystemExit, match="import failed: "):
    launch_module("import_hf").main(["--hf", bad, "--out", str(tmp_path / "out_cli")])


def test_config_fields_are_mio_7b_s():
  """MIO-7B's config.json values (MIO_FACTS.md) from MIO-7B's layout."""
  vocab = Vocabulary(text_size=64000, image_codes=8192, speech_codebook=1024, speech_layers=4)
  assert config_fields(vocab) == dict(
      text_vocab_size=64000, num_new_special_tokens=6, visual_vocab_size=8192, speech_vocab_size=4096,
      speech_placeholder=64000, speech_eos=64001, image_placeholder=64002, speech_bos=64003, image_eos=64004,
      image_bos=64005, speech_codebook_size=1024)


@pytest.fixture(scope="module")
def speech_first_export(tmp_path_factory):
  """Our tiny speech-first run exported (through the command line)."""
  vocab_cfg = dict(TINY_VOCAB, code_order="speech_first")
  workdir = str(tmp_path_factory.mktemp("run"))
  params = random_params(TINY, seed=4)
  step_dir = save_our_checkpoint(workdir, params)
  config = run_config(TINY, vocab_cfg)
  config.data = {"template_set": "paper", "image_tokens": 7}  # what generation needs after an import
  save_run_config(workdir, config)
  out = str(tmp_path_factory.mktemp("hf"))
  launch_module("export").main(["--checkpoint", step_dir, "--out", out])
  return out, params, Vocabulary.from_config(vocab_cfg)


def test_export_writes_mio_s_files(speech_first_export):
  out, _, vocab = speech_first_export
  config = read_json(os.path.join(out, "config.json"))
  assert {k: config[k] for k in mio_config_fields()} == mio_config_fields()
  assert read_json(os.path.join(out, "added_tokens.json")) == mio_added_tokens("speech_first")
  assert read_json(os.path.join(out, "special_tokens_map.json")) == {
      "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<unk>", "pad_token": "<unk>"}


def test_exported_tokenizer_reads_and_writes_mio_strings(speech_first_export):
  """AutoTokenizer on MIO's strings; its decode read by tokenization_mio.py's regexes. (MIO's own call,
  transformers 4.34's slow LlamaTokenizer.from_pretrained, is checked by hand: docs/export.md.)"""
  from transformers import AutoTokenizer

  out, _, vocab = speech_first_export
  added = mio_added_tokens("speech_first")
  string = "<image><img12><img7></image> The caption of this image is"
  expected = [vocab.bos, added["<image>"], added["<img12>"], added["<img7>"], added["</image>"]] + vocab.encode_text(
      " The caption of this image is")  # verbatim: MIO's added tokens keep the space after them
  tok = AutoTokenizer.from_pretrained(out)
  assert tok(string).input_ids == expected
  assert tok("say <spch><spch5><spch1029></spch>", add_special_tokens=False).input_ids == vocab.encode_text(
      "say ") + [added["<spch>"], added["<spch5>"], added["<spch1029>"], added["</spch>"]]
  assert tok(string, add_special_tokens=False).input_ids == vocab.encode_with_specials(string)
  # tokenization_mio.py's detokenize: batch_decode(skip_special_tokens=False), then its regexes.
  codes = np.random.default_rng(0).integers(0, 1024, (4, 3))
  ids = vocab.image_ids(np.array([[12, 7]])).tolist() + vocab.speech_ids(codes, output=True).tolist()
  text = tok.decode(ids, skip_special_tokens=False)
  assert re.findall(r"(<image>\s*(?:<img\d+>(?:\s*<img\d+>)*)\s*</image>)", text) == ["<image><img12><img7></image>"]
  speech = re.findall(r"(<spch>\s*(?:<spch\d+>(?:\s*<spch\d+>)*)\s*</spch>)", text)
  assert [int(t) for t in re.findall(r"<spch(\d+)>", speech[0])] == (codes + 1024 * np.arange(4)[:, None]).ravel().tolist()


def test_export_reimports_from_mio_fields_alone(speech_first_export, tmp_path):
  """Without mio_jax.json the import reads config.json and the tokenizer: the same layout and tensors."""
  out, params, _ = speech_first_export
  hf = str(tmp_path / "hf")
  shutil.copytree(out, hf)
  os.remove(os.path.join(hf, "mio_jax.json"))
  again = str(tmp_path / "again")
  import_hf(hf, again)
  saved = read_json(os.path.join(again, "model_config.json"))["vocab"]
  assert {k: v for k, v in saved.items() if k != "text_model"} == {
      k: v for k, v in TINY_VOCAB.items() if k != "text_model"} | {"code_order": "speech_first"}
  np.testing.assert_array_equal(read_params(again)["embed"]["table"], params["embed"]["table"])
  np.testing.assert_array_equal(read_params(again)["lm_head"], params["lm_head"])
  # MIO's fields alone say MIO's release: its 32-code image blocks, whatever this run used.
  assert read_json(os.path.join(again, "model_config.json"))["data"] == {"image_tokens": 32}


def test_export_and_import_keep_the_runs_image_block_and_templates(speech_first_export, tmp_path):
  out, _, _ = speech_first_export
  assert read_json(os.path.join(out, "mio_jax.json"))["run_data"] == {"template_set": "paper", "image_tokens": 7}
  import_hf(out, str(tmp_path / "again"))
  assert read_json(os.path.join(tmp_path, "again", "model_config.json"))["data"] == {
      "template_set": "paper", "image_tokens": 7}
