"""launch/generate.py on a small checkpoint in the train loop's layout, checked against generate()."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx

from mio_jax.generate.constraints import Layout
from mio_jax.generate.decode import Settings, generate
from mio_jax.generate.prompt import build_prompt, split_output
from mio_jax.model.transformer import ModelConfig, Transformer
from mio_jax.train.run_config import save_run_config
from mio_jax.train.state import init_params
from mio_jax.vocab import Vocabulary
from run_helpers import launch_module, run_config, save_our_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TEXT_MODEL = os.path.join(ROOT, "data", "vocab", "mini.model")
VOCAB_CFG = dict(text_model=TEXT_MODEL, image_codes=16, speech_codebook=8, speech_layers=4,
                 code_order="image_first")


cli = launch_module("generate")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  vocab = Vocabulary.from_config(VOCAB_CFG)
  cfg = ModelConfig(vocab_size=vocab.size, embed_dim=32, num_layers=2, num_heads=4, num_kv_heads=2,
                    head_dim=8, mlp_dim=64, dtype="float32", remat_policy="none")
  workdir = str(tmp_path_factory.mktemp("run"))
  save_our_checkpoint(workdir, init_params(cfg, seed=5), step=7)
  save_run_config(workdir, run_config(cfg, VOCAB_CFG))
  model = Transformer(cfg, rngs=nnx.Rngs(5))  # the same init as the saved params
  return workdir, model, vocab


def test_cli_output_equals_library_generation(run_dir, tmp_path):
  workdir, model, vocab = run_dir
  prefix = str(tmp_path / "out")
  args = cli.parse_args(["--checkpoint", workdir, "--prompt", "the cat <image>", "--image_tokens", "4",
                         "--max_new_tokens", "12", "--out_prefix", prefix, "--seed", "3"])
  result = cli.run(args)
  prompt = build_prompt(vocab, "the cat <image>")
  assert prompt[0] == vocab.bos and prompt[-1] == vocab.image_start
  expected, _ = generate(model, prompt[None], key=jax.random.key(3), max_new_tokens=12,
                         layout=Layout.from_vocab(vocab, 4), stop_ids=(vocab.eos, vocab.im_end),
                         settings=Settings())
  np.testing.assert_array_equal(result["ids"], np.asarray(expected[0]))
  ids = result["ids"]
  assert ids[4] == vocab.image_end
  saved = np.load(prefix + "_image0.npy")
  np.testing.assert_array_equal(saved, (ids[:4] - vocab.image_base).reshape(2, 2))
  assert result["output"].text.startswith("[image 0]")


def test_prompt_blocks_and_output_split():
  vocab = Vocabulary.from_config(VOCAB_CFG)
  image = np.array([[1, 2], [3, 4]])
  speech = np.array([[5, 6, 7]] * 4)
  ids = build_prompt(vocab, "look {image} and <spch>", image_codes=image, speech_codes=speech)
  expected_image = vocab.image_ids(image).tolist()
  start = ids.tolist().index(vocab.image_start)
  assert ids[start:start + 6].tolist() == expected_image
  assert ids[-1] == vocab.speech_start
  # Media without a placeholder goes first (after BOS); speech input is the content layer only.
  ids = build_prompt(vocab, "hi", speech_codes=speech)
  assert ids[:6].tolist() == [vocab.bos] + vocab.speech_ids(speech, output=False).tolist()
  gen = np.concatenate([vocab.encode_text("ok"), vocab.speech_ids(speech, output=True), [vocab.eos, 9]])
  out = split_output(vocab, gen, (vocab.eos,))
  assert out.text == "ok[speech 0]"
  np.testing.assert_array_equal(out.speech[0], speech)
  with pytest.raises(ValueError, match=r"\{image\}"):
    build_prompt(vocab, "see {image}")


@pytest.mark.slow  # a subprocess that imports everything
def test_cli_entry_point_runs_and_reports_bad_input(run_dir, tmp_path):
  workdir, _, _ = run_dir
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  script = os.path.join(ROOT, "launch", "generate.py")
  ok = subprocess.run([sys.executable, script, "--checkpoint", workdir, "--prompt", "hello <spch>",
                       "--max_speech_frames", "2", "--max_new_tokens", "10", "--out_prefix",
                       str(tmp_path / "s")], capture_output=True, text=True, env=env, timeout=120)
  assert ok.returncode == 0, ok.stderr
  assert ok.stdout.startswith("[speech 0]")
  assert np.load(tmp_path / "s_speech0.npy").shape[0] == 4
  bad = subprocess.run([sys.executable, script, "--checkpoint", workdir, "--prompt", "x",
                        "--image_codes", str(tmp_path / "missing.npy")],
                       capture_output=True, text=True, env=env, timeout=120)
  assert bad.returncode != 0 and "--image_codes=" in bad.stderr


@pytest.mark.slow  # a beam compile; CLI-equals-library stays
def test_cli_beam_search_equals_library(run_dir, tmp_path):
  from mio_jax.generate.beam import beam_search
  workdir, model, vocab = run_dir
  args = cli.parse_args(["--checkpoint", workdir, "--prompt", "the cat", "--num_beams", "2",
                         "--max_new_tokens", "6", "--out_prefix", str(tmp_path / "b")])
  result = cli.run(args)
  stops = (vocab.eos, vocab.im_end)
  best, _ = beam_search(model, build_prompt(vocab, "the cat"), num_beams=2, max_new_tokens=6,
                        stop_ids=tuple(sorted(set(stops))), layout=Layout.from_vocab(vocab, 256),
                        repetition_penalty=(1.0, 1.0, 1.15))  # the plain defaults' per-mode penalties
  np.testing.assert_array_equal(result["ids"], np.asarray(best))


@pytest.mark.slow  # a beam compile; CLI-equals-library stays
def test_cli_task_speech_generation_beams_into_a_speech_block(run_dir, tmp_path):
  # MIO's speech generation: 5 beams, repetition penalty 2.0 (infer.py); the beams keep the layout.
  from mio_jax.generate.beam import beam_search
  workdir, model, vocab = run_dir
  args = cli.parse_args(["--checkpoint", workdir, "--prompt", "hello <spch>", "--task", "speech_generation",
                         "--max_speech_frames", "2", "--max_new_tokens", "12", "--out_prefix", str(tmp_path / "t")])
  result = cli.run(args)
  best, _ = beam_search(model, build_prompt(vocab, "hello <spch>"), num_beams=5, max_new_tokens=12,
                        stop_ids=(vocab.eos, vocab.im_end), layout=Layout.from_vocab(vocab, 256, 2),
                        repetition_penalty=2.0)
  np.testing.assert_array_equal(result["ids"], np.asarray(best))
  assert result["output"].complete[0] == ("speech", 0, True)
  codes = np.load(tmp_path / "t_speech0.npy")
  assert codes.shape[0] == 4 and 1 <= codes.shape[1] <= 2  # four equal parts, as MIO decodes them


@pytest.mark.slow  # VQGAN and SpeechTokenizer decodes; CLI-equals-library stays
def test_cli_decodes_generated_blocks_to_png_and_wav(run_dir, tmp_path):
  import soundfile as sf
  from PIL import Image

  from mio_jax.tokenize.tiny_tokenizers import make_tiny_tokenizers
  from tokenizers_port import vqgan
  from tokenizers_port.speechtokenizer.load import load as load_speech

  workdir, _, _ = run_dir
  speech_dir, image_dir = make_tiny_tokenizers(str(tmp_path / "tok"))
  prefix = str(tmp_path / "g")
  common = ["--checkpoint", workdir, "--out_prefix", prefix, "--image_tokenizer", image_dir,
            "--speech_tokenizer", speech_dir, "--stop_after_media"]
  result = cli.run(cli.parse_args(common + ["--prompt", "the cat <image>", "--image_tokens", "4",
                                            "--max_new_tokens", "12"]))
  assert result["files"] == [prefix + "_image0.npy", prefix + "_image0.png"]
  codes = np.load(prefix + "_image0.npy")
  expected = np.asarray(vqgan.load(image_dir, conv_impl="direct").decode(codes.reshape(1, -1), grid=codes.shape))[0]
  np.testing.assert_array_equal(np.asarray(Image.open(prefix + "_image0.png")), expected)

  cli.run(cli.parse_args(common + ["--prompt", "hello <spch>", "--max_speech_frames", "3",
                                   "--max_new_tokens", "14"]))
  codes = np.load(prefix + "_speech0.npy")
  wave, rate = sf.read(prefix + "_speech0.wav", dtype="float32")
  expected = load_speech(speech_dir).decode(codes[:, None, :])[0]
  expected = expected / max(1.0, float(np.abs(expected).max()))
  assert rate == 16000 and len(wave) == codes.shape[1] * 320
  np.testing.assert_allclose(wave, expected, atol=1 / 32767 + 1e-6)  # 16-bit PCM rounding
