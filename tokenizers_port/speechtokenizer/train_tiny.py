"""Train the tiny SpeechTokenizer on the mini corpus speech, for `make demo`.

  python -m tokenizers_port.speechtokenizer.train_tiny --out data/tokenizers/tiny_speechtokenizer

The random tiny SpeechTokenizer (load.save_random_tiny) hashes waveform shape: the
same word spoken twice gets unrelated codes, so a model cannot learn what speech says. The
released SpeechTokenizer makes RVQ layer 1 carry content by distilling HuBERT into it. HuBERT
cannot be had here, so the stand-in teacher is per-clip normalised MFCCs (spectral envelope, which
is what tells phones apart): the encoder (SEANet + BiLSTM, the port's own modules) is trained to
predict them through a linear head that is then dropped, and each RVQ layer's codebook is k-means
on the encoder's features (layer 1) or on what the layers before it leave (layers 2-8). Only
`active` rows of a codebook are fitted; the other rows repeat them, so the nearest-code search
(first index on ties) never returns them and decoding any code stays finite. Last, the decoder
learns to turn the first 4 layers' code vectors (what MIO's vocabulary keeps) back into the
waveform under a multi-resolution STFT loss: it puts back the spectral envelope (a whisper-like
sound; a tiny decoder in 2 CPU minutes makes no pitch). Training sees no transcripts.
"""

import argparse
import glob
import json
import os
import tempfile
import time

import jax.numpy as jnp
import numpy as np
import optax
import soundfile as sf
from flax import nnx

from tokenizers_port.kmeans import kmeans, nearest
from tokenizers_port.speechtokenizer.config import tiny_config
from tokenizers_port.speechtokenizer.load import (SpeechTokenizer, build_model, load, random_params,
                                                  save_model, save_random_tiny)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
N_COEF = 14  # MFCC c0..c13


def load_clips(speech_dir: str) -> tuple[list[str], list[np.ndarray]]:
  """Every WAV in speech_dir, sorted -> (names relative to its parent, float32 mono clips)."""
  files = sorted(glob.glob(os.path.join(speech_dir, "*.wav")))
  rel = [os.path.relpath(f, os.path.dirname(speech_dir)) for f in files]
  return rel, [sf.read(f, dtype="float32")[0] for f in files]


def _mel_filters(sr: int, n_fft: int, n_mels: int, fmin: float = 50.0, fmax: float = 7600.0):
  mel = np.linspace(*(2595 * np.log10(1 + np.array([fmin, fmax]) / 700)), n_mels + 2)
  hz = 700 * (10 ** (mel / 2595) - 1)
  bins = np.fft.rfftfreq(n_fft, 1 / sr)
  lo, mid, hi = hz[:-2, None], hz[1:-1, None], hz[2:, None]
  return np.clip(np.minimum((bins - lo) / (mid - lo), (hi - bins) / (hi - mid)), 0, None)


def mfcc_targets(wave: np.ndarray, hop: int = 320, sr: int = 16000, win: int = 640,
                 n_fft: int = 1024, n_mels: int = 40) -> np.ndarray:
  """[ceil(T / hop), N_COEF] MFCCs, one per encoder frame (window centred on the frame's hop),
  each coefficient standardised over the clip (removes channel and some speaker colouring)."""
  n = -(-len(wave) // hop)
  padded = np.pad(wave.astype(np.float64), (win // 2 - hop // 2, n * hop + win))
  frames = padded[np.arange(n)[:, None] * hop + np.arange(win)[None]] * np.hanning(win)
  power = np.abs(np.fft.rfft(frames, n_fft)) ** 2
  mel = power @ _mel_filters(sr, n_fft, n_mels).T
  logmel = np.log(mel + 1e-6 * mel.max() + 1e-12)
  k = np.arange(n_mels)
  dct = np.cos(np.pi / n_mels * (k[None] + 0.5) * np.arange(N_COEF)[:, None])  # DCT-II rows
  c = logmel @ dct.T
  return ((c - c.mean(0)) / (c.std(0) + 1e-5)).astype(np.float32)


class Distiller(nnx.Module):
  """The tokenizer's encoder plus a linear head onto the teacher's features (dropped after)."""

  def __init__(self, encoder, dim: int, seed: int):
    self.encoder = encoder
    self.head = nnx.Linear(dim, N_COEF, rngs=nnx.Rngs(seed))

  def __call__(self, waves):
    return self.head(self.encoder(waves[:, :, None]))


def fit(module: nnx.Module, loss_fn, next_batch, *, steps: int, lr: float, what: str,
        log=print) -> float:
  """Adam (warm-up, cosine decay, clipped) on `module`'s parameters, minimising
  loss_fn(module, *next_batch()) for `steps` batches; returns the last 20 steps' mean loss."""
  sched = optax.warmup_cosine_decay_schedule(0.0, lr, steps // 10, steps, lr * 0.05)
  opt = nnx.Optimizer(module, optax.chain(optax.clip_by_global_norm(1.0), optax.adam(sched)),
                      wrt=nnx.Param)

  @nnx.jit
  def train_step(m, o, *batch):
    loss, grads = nnx.value_and_grad(lambda m_: loss_fn(m_, *batch))(m)
    o.update(m, grads)
    return loss

  losses, t0 = [], time.time()
  for step in range(steps):
    losses.append(float(train_step(module, opt, *map(jnp.asarray, next_batch()))))
    if step % 100 == 0 or step == steps - 1:
      log(f"{what} step {step:4d}  loss {losses[-1]:.4f}  {time.time() - t0:6.1f}s")
  return float(np.mean(losses[-20:]))


def random_crops(rng: np.random.Generator, frames: list[int], batch: int, crop_frames: int):
  """-> [(clip index, first frame)] of `batch` frame-aligned crops from clips longer than a crop."""
  picks = rng.choice([i for i, n in enumerate(frames) if n > crop_frames], batch)
  return [(i, int(rng.integers(0, frames[i] - crop_frames))) for i in picks]


def distill(model, clips: list[np.ndarray], *, steps: int, batch: int, crop_frames: int,
            lr: float, seed: int, log=print) -> float:
  """Trains model.encoder on frame-aligned random crops; returns the last steps' mean loss."""
  hop = model.cfg.hop_length
  rng = np.random.default_rng(seed)
  targets = [mfcc_targets(c, hop, model.cfg.sample_rate) for c in clips]
  frames = [len(t) for t in targets]

  def next_batch():
    picked = random_crops(rng, frames, batch, crop_frames)
    return (np.stack([clips[i][s * hop:(s + crop_frames) * hop] for i, s in picked]),
            np.stack([targets[i][s:s + crop_frames] for i, s in picked]))

  return fit(Distiller(model.encoder, model.cfg.dimension, seed),
             lambda student, waves, tgt: jnp.mean(jnp.square(student(waves) - tgt)), next_batch,
             steps=steps, lr=lr, what="encoder (MFCC mse)", log=log)


def fit_codebooks(model, feats: np.ndarray, active: tuple[int, ...], seed: int,
                  iters: int = 30) -> None:
  """Layer q's codebook <- k-means (active[q] rows, float64) on the residual the layers before it
  leave of `feats` [N, D]; its other rows repeat the fitted ones (never nearest, decodable)."""
  rng = np.random.default_rng(seed)
  books = np.array(model.quantizer.codebooks[...])
  residual = feats.astype(np.float64)
  for q in range(books.shape[0]):
    centres = kmeans(residual, active[min(q, len(active) - 1)], iters, rng)
    residual = residual - centres[nearest(residual, centres)]
    books[q] = np.resize(centres, books[q].shape)
  model.quantizer.codebooks[...] = jnp.asarray(books, jnp.float32)


DECODE_LAYERS = 4  # the RVQ layers MIO's vocabulary keeps (content + 3), all the decoder sees


def _stft_magnitude(x, n_fft: int):
  hop = n_fft // 4
  idx = jnp.arange((x.shape[-1] - n_fft) // hop + 1)[:, None] * hop + jnp.arange(n_fft)[None]
  return jnp.abs(jnp.fft.rfft(x[:, idx] * jnp.hanning(n_fft), axis=-1))


def spectral_loss(y, x, sizes=(256, 512, 1024)):
  """Multi-resolution STFT loss (spectral convergence + log-magnitude L1; Yamamoto et al. 2020)."""
  total = 0.0
  for n in sizes:
    ym, xm = _stft_magnitude(y, n), _stft_magnitude(x, n)
    total += jnp.linalg.norm(ym - xm) / (jnp.linalg.norm(xm) + 1e-7)
    total += jnp.mean(jnp.abs(jnp.log(ym + 1e-5) - jnp.log(xm + 1e-5)))
  return total / len(sizes)


def train_decoder(model, codes: np.ndarray, clips: list[np.ndarray], *, steps: int, batch: int,
                  crop_frames: int, lr: float, seed: int, log=print) -> float:
  """Trains model.decoder to turn the code vectors of `codes` (the clips' first DECODE_LAYERS
  layers, [layers, clips, frames]; frame-aligned crops) back into the waveform under a spectral
  loss; returns the last steps' mean loss."""
  hop = model.cfg.hop_length
  rng = np.random.default_rng(seed + 1)
  frames = -(-np.array([len(c) for c in clips]) // hop)
  summed = np.asarray(model.quantizer.decode(np.maximum(codes, 0)))  # -1 (past a clip) -> any row
  latents = [summed[i, :n] for i, n in enumerate(frames)]

  def next_batch():
    picked = random_crops(rng, list(frames), batch, crop_frames)
    return (np.stack([latents[i][s:s + crop_frames] for i, s in picked]),
            np.stack([np.pad(clips[i], (0, hop))[s * hop:(s + crop_frames) * hop] for i, s in picked]))

  return fit(model.decoder, lambda dec, lat, wav: spectral_loss(dec(lat)[:, :, 0], wav), next_batch,
             steps=steps, lr=lr, what="decoder (spectral)", log=log)


def _edit_distance(a: np.ndarray, b: np.ndarray) -> int:
  row = np.arange(len(b) + 1)
  for i, x in enumerate(a, 1):
    prev, row = row, np.empty_like(row)
    row[0] = i
    sub = prev[:-1] + (b != x)
    for j in range(1, len(b) + 1):  # row[j] depends on row[j-1]: a short Python loop
      row[j] = min(sub[j - 1], prev[j] + 1, row[j - 1] + 1)
  return int(row[-1])


def nearest_transcript_accuracy(codes: list[np.ndarray], texts: list[str], every: int = 5) -> float:
  """Every `every`-th clip (as the demo holds them out) takes the transcript of the other clip
  whose layer-1 code sequence (repeats merged) is nearest in edit distance: the fraction right.
  Codes that carry what was said score well above chance; waveform hashes do not."""
  seqs = [c[np.r_[True, c[1:] != c[:-1]]] for c in codes]
  test = [i for i in range(len(seqs)) if i % every == every - 1]
  train = [i for i in range(len(seqs)) if i % every != every - 1]
  hits = 0
  for i in test:
    j = min(train, key=lambda t: _edit_distance(seqs[i], seqs[t]) / max(len(seqs[i]), len(seqs[t])))
    hits += texts[j] == texts[i]
  return hits / len(test)


def spectrogram_png(tok, clips: list[np.ndarray], path: str) -> None:
  """Log-magnitude spectrograms (0-8 kHz, 60 dB), originals left, decode(encode(x)) right."""
  from PIL import Image
  recon = tok.decode(tok.encode(clips, n_q=DECODE_LAYERS))

  def spec(x, n=512, hop=128):
    idx = np.arange((len(x) - n) // hop + 1)[:, None] * hop + np.arange(n)[None]
    db = 20 * np.log10(np.abs(np.fft.rfft(x[idx] * np.hanning(n))) + 1e-6).T[::-1]
    return (np.clip((db - db.max() + 60) / 60, 0, 1) * 255).astype(np.uint8)

  rows = [np.concatenate([spec(x), np.full((257, 4), 255, np.uint8), spec(y[:len(x)])], axis=1)
          for x, y in zip(clips, recon)]
  width = max(r.shape[1] for r in rows)
  Image.fromarray(np.concatenate([np.pad(r, ((0, 4), (0, width - r.shape[1]))) for r in rows])
                  ).save(path, optimize=True)


def transcripts(manifest: str) -> dict[str, str]:
  with open(manifest) as f:
    return {r["audio"]: r["transcript"] for r in map(json.loads, f)}


def roundtrip_agreement(tok, clips: list[np.ndarray], codes: np.ndarray | None = None) -> float:
  """Share of frames whose layer-1 code survives decode(first DECODE_LAYERS layers) + re-encode:
  whether the decoder puts back what the encoder reads as content. `codes`: the clips' codes
  from tok.encode(clips, n_q=DECODE_LAYERS), if already at hand."""
  codes = tok.encode(clips, n_q=DECODE_LAYERS) if codes is None else codes
  again = tok.encode(list(tok.decode(codes)), n_q=1)[0]
  valid = codes[0] >= 0
  return float((again[valid] == codes[0][valid]).mean())


def train(clips: list[np.ndarray], *, steps: int = 400, batch: int = 16, crop_frames: int = 36,
          lr: float = 3e-3, active: tuple[int, ...] = (64, 16), n_filters: int = 4,
          decoder_steps: int = 600, seed: int = 0, log=print):
  """-> the trained model (encoder distilled, codebooks fitted, then the decoder trained)."""
  cfg = tiny_config(n_filters)
  model = build_model(cfg, random_params(cfg, seed), "init")
  loss = distill(model, clips, steps=steps, batch=batch, crop_frames=crop_frames, lr=lr,
                 seed=seed, log=log)
  log(f"distilled: mfcc mse {loss:.3f} (1.0 = predicting the clip mean)")
  feats = SpeechTokenizer(model).features(clips)
  frames = -(-np.array([len(c) for c in clips]) // cfg.hop_length)
  fit_codebooks(model, np.concatenate([f[:n] for f, n in zip(feats, frames)]), active, seed)
  if decoder_steps:
    tok = SpeechTokenizer(model)  # weights as they stand now; the decoder's change below
    codes = tok.encode(clips, n_q=DECODE_LAYERS)
    before = roundtrip_agreement(tok, clips, codes)
    loss = train_decoder(model, codes, clips, steps=decoder_steps, batch=8, crop_frames=50, lr=lr,
                         seed=seed, log=log)
    after = roundtrip_agreement(SpeechTokenizer(model), clips)
    log(f"decoder: spectral loss {loss:.3f}; layer-1 codes kept by decode + re-encode "
        f"{after:.2f} (random decoder {before:.2f})")
  return model


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--out", default=os.path.join(ROOT, "data", "tokenizers", "tiny_speechtokenizer"))
  p.add_argument("--speech", default=os.path.join(ROOT, "data", "mini", "speech"))
  p.add_argument("--steps", type=int, default=400)
  p.add_argument("--active", default="64,16", help="fitted codes of layer 1, of layers 2-8")
  p.add_argument("--n_filters", type=int, default=4)
  p.add_argument("--decoder_steps", type=int, default=600)
  p.add_argument("--png", default=os.path.join(ROOT, "docs", "images",
                                               "tiny_speechtokenizer_roundtrip.png"))
  p.add_argument("--seed", type=int, default=0)
  args = p.parse_args(argv)
  t0 = time.time()
  names, clips = load_clips(args.speech)
  active = tuple(int(a) for a in args.active.split(","))
  model = train(clips, steps=args.steps, active=active, n_filters=args.n_filters,
                decoder_steps=args.decoder_steps, seed=args.seed)
  save_model(model, args.out)
  print(f"trained in {time.time() - t0:.0f}s -> {args.out}")
  tok = SpeechTokenizer(model)
  if args.png:
    spectrogram_png(tok, clips[4:15:5], args.png)  # three of the demo's held-out clips
  texts = transcripts(os.path.join(os.path.dirname(args.speech), "speech_text.jsonl"))
  with tempfile.TemporaryDirectory() as tmp:
    random = load(save_random_tiny(tmp))  # the demo's random one
  for name, t in (("trained", tok), ("random", random)):
    seqs = [c[c >= 0] for c in t.encode(clips, n_q=1)[0]]
    acc = nearest_transcript_accuracy(seqs, [texts[n] for n in names])
    print(f"{name}: held-out nearest-transcript accuracy (every 5th clip, layer-1 codes) {acc:.2f}; "
          f"layer-1 codes used: {len(np.unique(np.concatenate(seqs)))}")


if __name__ == "__main__":
  main()
