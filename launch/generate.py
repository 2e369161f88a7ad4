"""Generate from a trained checkpoint: text, and MIO-style image and speech code blocks.

  python launch/generate.py --checkpoint /runs/stage1 --prompt "a red square <image>"
  python launch/generate.py --checkpoint RUN --prompt "{image} describe it:" --image_codes img.npy
  python launch/generate.py --checkpoint RUN --prompt "say hi <spch>" --max_new_tokens 400

Prints the generated text (media blocks shown as [image K] / [speech K]) and writes each generated
block's codes to OUT_PREFIX_imageK.npy ([h, w]) / OUT_PREFIX_speechK.npy ([layers, frames]).
Decoding is constrained: after <image> exactly --image_tokens image codes then </image>; after <spch>
four equal parts (content, then three timbre layers) then </spch>. See docs/generation.md.
"""

import os
import sys

# The repo root replaces this script's folder on the path (launch/tokenize.py shadows the stdlib).
sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import argparse  # noqa: E402


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--checkpoint", required=True, help="workdir, checkpoints dir, step dir or params dir")
  p.add_argument("--prompt", required=True, help="text; may hold <image>, <spch>, {image}, {speech}")
  p.add_argument("--image_codes", default=None, help=".npy [h, w] image codes for {image}")
  p.add_argument("--speech_codes", default=None, help=".npy [layers, frames] speech codes for {speech}")
  p.add_argument("--max_new_tokens", type=int, default=64)
  p.add_argument("--image_tokens", type=int, default=256, help="codes per image (the VQGAN grid)")
  p.add_argument("--max_speech_frames", type=int, default=0, help="cap on speech part length (0: none)")
  p.add_argument("--temperature", type=float, default=0.0, help="text temperature (0: greedy, MIO)")
  p.add_argument("--top_p", type=float, default=1.0, help="text top-p")
  p.add_argument("--media_temperature", type=float, default=1.0)
  p.add_argument("--media_top_p", type=float, default=0.7, help="MIO: 0.7 for images and speech")
  p.add_argument("--speech_repetition_penalty", type=float, default=1.15)
  p.add_argument("--image_repetition_penalty", type=float, default=1.0, help="MIO: 1.15 for video")
  p.add_argument("--num_beams", type=int, default=1, help="> 1: beam search, text only")
  p.add_argument("--length_penalty", type=float, default=1.0, help="beam score / length**this")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--no_bos", action="store_true", help="do not start the prompt with BOS")
  p.add_argument("--text_model", default=None, help="SentencePiece .model override")
  p.add_argument("--out_prefix", default="generated", help="prefix of the .npy files written")
  return p.parse_args(argv)


def _load_codes(path, what):
  import numpy as np
  if path is None:
    return None
  try:
    return np.load(path)
  except (OSError, ValueError) as e:
    raise ValueError(f"--{what}={path}: cannot read a .npy array: {e}") from e


def run(args) -> dict:
  import jax
  import numpy as np

  from mio_jax.generate.beam import beam_search
  from mio_jax.generate.constraints import Layout
  from mio_jax.generate.decode import Settings, generate
  from mio_jax.generate.load import load_model
  from mio_jax.generate.prompt import build_prompt, split_output, unclosed_block

  model, vocab = load_model(args.checkpoint, text_model=args.text_model)
  prompt = build_prompt(vocab, args.prompt, image_codes=_load_codes(args.image_codes, "image_codes"),
                        speech_codes=_load_codes(args.speech_codes, "speech_codes"), bos=not args.no_bos)
  settings = Settings(text_temperature=args.temperature, text_top_p=args.top_p,
                      image_temperature=args.media_temperature, image_top_p=args.media_top_p,
                      image_penalty=args.image_repetition_penalty,
                      speech_temperature=args.media_temperature, speech_top_p=args.media_top_p,
                      speech_penalty=args.speech_repetition_penalty)
  layout = Layout.from_vocab(vocab, args.image_tokens, args.max_speech_frames)
  stops = tuple(sorted({vocab.eos, vocab.im_end}))
  if args.num_beams > 1:
    if len(unclosed_block(vocab, prompt)):
      raise ValueError("--num_beams > 1 decodes text only; the prompt ends inside an <image>/<spch> block")
    best, _ = beam_search(model, prompt, num_beams=args.num_beams, max_new_tokens=args.max_new_tokens,
                          stop_ids=stops, layout=layout, length_penalty=args.length_penalty)
    ids = best[None]
  else:
    ids, _ = generate(model, prompt[None], key=jax.random.key(args.seed),
                      max_new_tokens=args.max_new_tokens, layout=layout, settings=settings, stop_ids=stops)
  # A prompt ending inside a block (e.g. "... <image>"): the generated codes belong to that block.
  open_block = unclosed_block(vocab, prompt)
  out = split_output(vocab, np.concatenate([open_block, np.asarray(ids[0])]), stops)
  written = []
  for kind, k, closed in out.complete:
    path = f"{args.out_prefix}_{kind}{k}.npy"
    np.save(path, (out.images if kind == "image" else out.speech)[k])
    written.append(path)
  print(out.text)
  for (kind, k, closed), path in zip(out.complete, written):
    print(f"wrote {path}" + ("" if closed else f" (incomplete: {kind} block cut by --max_new_tokens)"))
  return {"ids": np.asarray(ids[0]), "output": out, "files": written}


def main(argv=None):
  args = parse_args(argv)
  try:
    run(args)
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"generate: {e}")


if __name__ == "__main__":
  main()
