"""SpeechTokenizer checkpoint conversion: the CLI, weight-norm folding, Snake, and clear errors."""

import json

import numpy as np
import pytest

import torch  # noqa: E402  (the test extra installs the references; missing is an error)

from tokenizers_port import convert as convert_cli  # noqa: E402
from tokenizers_port.speechtokenizer import load, reference  # noqa: E402

TINY = dict(reference.SMALL_CONFIG, n_filters=4, dimension=32, semantic_dimension=16,
            codebook_size=64, n_q=2)


@pytest.fixture(scope="module")
def released(tmp_path_factory):
  model = reference.build_reference(TINY)
  out = tmp_path_factory.mktemp("speech_tiny")
  ckpt, cfg = reference.save_released_layout(model, TINY, str(out / "torch"))
  return model, ckpt, cfg, out


def _run_cli(ckpt, cfg, out):
  convert_cli.main(["speechtokenizer", "--torch-checkpoint", str(ckpt), "--config", str(cfg),
                    "--out", str(out)])


def test_cli_folds_weight_norm(released):
  model, ckpt, cfg, out = released
  _run_cli(ckpt, cfg, out / "flax")
  from safetensors.numpy import load_file
  params = load_file(str(out / "flax" / "params.safetensors"))
  state = torch.load(ckpt)
  assert any(k.endswith("weight_g") for k in state)
  conv = model.encoder.model[3].conv.conv  # first strided conv: torch recomputes w from g, v
  folded = torch._weight_norm(conv.weight_v, conv.weight_g, 0).detach().numpy()
  np.testing.assert_allclose(params["encoder/stages/0/down/kernel"], folded.transpose(2, 1, 0),
                             rtol=1e-6, atol=1e-7)
  lstm = model.encoder.model[13].lstm
  np.testing.assert_allclose(params["encoder/lstm/layers/1/w_hh"][1],
                             lstm.weight_hh_l1_reverse.detach().numpy().T)


@pytest.mark.parametrize("activation", ["ELU", pytest.param("Snake", marks=pytest.mark.slow)])  # ELU: the release
def test_random_init_matches_reference(activation, tmp_path):
  config = dict(TINY, activation=activation)
  model = reference.build_reference(config, seed=3)
  ckpt, cfg = reference.save_released_layout(model, config, str(tmp_path / "torch"))
  _run_cli(ckpt, cfg, tmp_path / "flax")
  tok = load(str(tmp_path / "flax"))
  wave = np.sin(np.arange(4001, dtype=np.float32) * 0.05) * 0.3
  with torch.no_grad():
    x = torch.from_numpy(wave)[None, None]
    feats = model.encoder(x)[0].T.numpy()
    codes = model.encode(x).numpy()
    wav = model.decode(torch.from_numpy(codes))[0, 0].numpy()
  np.testing.assert_allclose(tok.features(wave[None])[0], feats, atol=1e-5)
  np.testing.assert_allclose(tok.decode(codes)[0], wav, atol=1e-5)


def _expect_exit(capsys, ckpt, cfg, out, pattern):
  with pytest.raises(SystemExit) as err:
    _run_cli(ckpt, cfg, out)
  assert err.value.code and pattern in str(err.value.code), err.value.code


def test_missing_key_is_named(released, tmp_path, capsys):
  _, ckpt, cfg, _ = released
  state = torch.load(ckpt)
  del state["encoder.model.6.conv.conv.weight_v"]
  torch.save(state, tmp_path / "bad.pt")
  _expect_exit(capsys, tmp_path / "bad.pt", cfg, tmp_path / "o", "encoder.model.6.conv.conv.weight_v")


def test_misshapen_key_is_named(released, tmp_path, capsys):
  _, ckpt, cfg, _ = released
  state = torch.load(ckpt)
  state["quantizer.vq.layers.1._codebook.embed"] = torch.zeros(64, 31)
  torch.save(state, tmp_path / "bad.pt")
  _expect_exit(capsys, tmp_path / "bad.pt", cfg, tmp_path / "o",
               "quantizer.vq.layers.1._codebook.embed has shape (64, 31), expected (64, 32)")
  state = torch.load(ckpt)
  state["encoder.model.6.conv.conv.weight_v"] = torch.ones(16, 8, 7)
  state["encoder.model.6.conv.conv.weight_g"] = torch.ones(16, 1, 1)
  torch.save(state, tmp_path / "bad.pt")
  _expect_exit(capsys, tmp_path / "bad.pt", cfg, tmp_path / "o", "encoder.model.6.conv.conv.weight_v")
  state = torch.load(ckpt)
  state["decoder.model.1.lstm.weight_hh_l0"] = torch.zeros(4, 4, 4)
  torch.save(state, tmp_path / "bad.pt")
  _expect_exit(capsys, tmp_path / "bad.pt", cfg, tmp_path / "o", "decoder.model.1.lstm.weight_hh_l0")


def test_config_mismatch_and_missing_config_key(released, tmp_path, capsys):
  _, ckpt, cfg, _ = released
  wrong = dict(TINY, n_residual_layers=2)
  (tmp_path / "wrong.json").write_text(json.dumps(wrong))
  _expect_exit(capsys, ckpt, tmp_path / "wrong.json", tmp_path / "o", "missing key")
  partial = {k: v for k, v in TINY.items() if k != "strides"}
  (tmp_path / "partial.json").write_text(json.dumps(partial))
  _expect_exit(capsys, ckpt, tmp_path / "partial.json", tmp_path / "o", "strides")
