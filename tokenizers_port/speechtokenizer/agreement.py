"""Port vs PyTorch reference on synthetic speech: code agreement per RVQ layer, feature and
decoder error. Used by the tests and runnable on its own for the numbers in the docs:

  python -m tokenizers_port.speechtokenizer.agreement --clips 32 [--small]

Steps: build the reference from the config, make it realistic (standardized activations,
codebooks fitted to encoder residuals), save it in the released layout, convert with the CLI's
code path, load, then compare clip by clip (the Flax side runs all clips as one padded batch).
"""

import argparse
import json
import os
import tempfile

import numpy as np

from tokenizers_port.speechtokenizer import reference
from tokenizers_port.speechtokenizer.convert import convert
from tokenizers_port.speechtokenizer.load import load
from tokenizers_port.speechtokenizer.synth import corpus


def build_pair(config: dict, calib_clips: list[np.ndarray], out_dir: str, seed: int = 0,
               stats_clips: int = 4, stats_samples: int = 16000, **overrides):
  """-> (torch reference, Flax tokenizer loaded from its converted checkpoint)."""
  model = reference.build_reference(config, seed)
  reference.make_realistic(model, calib_clips, seed, stats_clips, stats_samples)
  ckpt, cfg_json = reference.save_released_layout(model, config, os.path.join(out_dir, "torch"))
  convert(ckpt, cfg_json, os.path.join(out_dir, "flax"))
  return model, load(os.path.join(out_dir, "flax"), **overrides)


def reference_outputs(model, clips: list[np.ndarray], decoded: int):
  """Per clip: features [F, D], codes [n_q, F], decoded waveform [F * hop] (the first `decoded`
  clips; the others None)."""
  import torch
  out = []
  with torch.no_grad():
    for i, clip in enumerate(clips):
      x = torch.from_numpy(clip)[None, None]
      feats = model.encoder(x)
      codes = model.quantizer.encode(feats, n_q=model.n_q)
      wav = model.decode(codes)[0, 0].numpy() if i < decoded else None
      out.append((feats[0].T.numpy(), codes[:, 0].numpy(), wav))
  return out


def compare(model, tok, clips: list[np.ndarray], decoded: int | None = None) -> dict:
  """Agreement per layer and max |feature diff| over `clips`; max |decoder diff| (same codes) over
  the first `decoded` of them (all by default: the decoder costs more than the encoder)."""
  k = len(clips) if decoded is None else min(decoded, len(clips))
  ref = reference_outputs(model, clips, k)
  feats = tok.features(clips)
  codes = tok.encode(clips)
  frames = [r[1].shape[1] for r in ref]
  ref_codes = np.full(codes.shape, -1, np.int64)
  for i, r in enumerate(ref):
    ref_codes[:, i, :frames[i]] = r[1]
  wav = tok.decode(ref_codes[:, :k])
  valid = ref_codes[0] >= 0
  agree = [(codes[q][valid] == ref_codes[q][valid]).mean() for q in range(codes.shape[0])]
  feat_err = max(np.abs(feats[i, :frames[i]] - r[0]).max() for i, r in enumerate(ref))
  feat_scale = max(np.abs(r[0]).max() for r in ref)
  dec_err = max(np.abs(wav[i, :r[2].shape[0]] - r[2]).max() for i, r in enumerate(ref[:k]))
  dec_scale = max(np.abs(r[2]).max() for r in ref[:k])
  return {"clips": len(clips), "decoded_clips": k, "frames": int(valid.sum()),
          "audio_seconds": float(sum(c.shape[0] for c in clips) / tok.cfg.sample_rate),
          "agreement_per_layer": [float(a) for a in agree],
          "feature_max_abs_err": float(feat_err), "feature_max_abs": float(feat_scale),
          "decoder_max_abs_err": float(dec_err), "decoder_max_abs": float(dec_scale)}


def main() -> None:
  parser = argparse.ArgumentParser(description="SpeechTokenizer port vs PyTorch reference")
  parser.add_argument("--clips", type=int, default=32)
  parser.add_argument("--small", action="store_true", help="reduced widths instead of the official config")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  config = reference.SMALL_CONFIG if args.small else reference.OFFICIAL_CONFIG
  clips = corpus(args.clips, seed=args.seed)
  calib = corpus(args.clips, seed=args.seed + 100)  # other voices/speeds: codebooks not fit to the test clips
  with tempfile.TemporaryDirectory() as tmp:
    model, tok = build_pair(config, calib, tmp, args.seed)
  print(json.dumps(compare(model, tok, clips), indent=2))


if __name__ == "__main__":
  main()
