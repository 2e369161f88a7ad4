"""Generate from a trained checkpoint: text, and MIO-style image and speech code blocks.

  python launch/generate.py --checkpoint /runs/stage1 --prompt "Please generate an image of \`\`a red square''<image>"
  python launch/generate.py --checkpoint RUN --prompt "{image} The caption of this image is" --image_codes img.npy
  python launch/generate.py --checkpoint RUN --prompt "Please generate a speech of \`\`say hi'': <spch>" --max_new_tokens 400
  python launch/generate.py --checkpoint RUN --task image_generation --prompt "Please generate an image of \`\`a cat''<image>"

Prompts in the run's template wording (config.data.template_set; docs/data_pipeline.md) give the ids
training saw: text is encoded verbatim, as the data pipeline encodes it. --task picks MIO's decoding
settings for the task (mio_jax/generate/presets.py); explicit flags override them.

Prints the generated text (media blocks shown as [image K] / [speech K]) and writes each generated
block's codes to OUT_PREFIX_imageK.npy ([h, w]) / OUT_PREFIX_speechK.npy ([layers, frames]); with
--image_tokenizer / --speech_tokenizer (converted tokenizer folders) also the decoded
OUT_PREFIX_imageK.png / OUT_PREFIX_speechK.wav.
Decoding is constrained: after <image> exactly --image_tokens image codes (default: the run's
config.data.image_tokens, 256 for a VQGAN, 32 for SEED-Tokenizer-2) then </image>; after <spch>
four equal parts (content, then three timbre layers) then </spch>, in beam search too.
--task picks MIO's infer.py settings for that task (mio_jax/generate/presets.py); the sampling and beam
flags given override it. See docs/generation.md.
"""

import os
import sys

# The repo root replaces this script's folder on the path (launch/tokenize.py shadows the stdlib).
sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from mio_jax.host_platform import default_to_cpu_without_accelerator  # noqa: E402

default_to_cpu_without_accelerator()  # before JAX starts: on a CPU-only machine libtpu stays quiet

import argparse  # noqa: E402
import dataclasses  # noqa: E402

# Flag -> the decode.Settings fields it sets.
_SETTING_FLAGS = {"repetition_penalty": ("text_penalty", "image_penalty", "speech_penalty"),
                  "temperature": ("text_temperature",), "top_p": ("text_top_p",),
                  "media_temperature": ("image_temperature", "speech_temperature"),
                  "media_top_p": ("image_top_p", "speech_top_p"),
                  "image_repetition_penalty": ("image_penalty",),
                  "speech_repetition_penalty": ("speech_penalty",)}


def parse_args(argv=None):
  from mio_jax.generate.presets import TASKS

  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--checkpoint", required=True, help="workdir, checkpoints dir, step dir or params dir")
  p.add_argument("--prompt", required=True, help="text; may hold <image>, <spch>, {image}, {speech}")
  p.add_argument("--image_codes", default=None, help=".npy [h, w] image codes for {image}")
  p.add_argument("--speech_codes", default=None, help=".npy [layers, frames] speech codes for {speech}")
  p.add_argument("--max_new_tokens", type=int, default=64)
  p.add_argument("--image_tokens", type=int, default=None,
                 help="codes per image [the run's config.data.image_tokens: 256 VQGAN, 32 SEED-2]")
  p.add_argument("--max_speech_frames", type=int, default=0, help="cap on speech part length (0: none)")
  p.add_argument("--task", default=None, choices=list(TASKS),
                 help="MIO's infer.py decoding for this task (beams, sampling, penalty); flags below override")
  # Unset (None) flags keep the task's value, or without --task the per-modality defaults in brackets.
  p.add_argument("--temperature", type=float, default=None, help="text temperature [0: greedy]")
  p.add_argument("--top_p", type=float, default=None, help="text top-p [1.0]")
  p.add_argument("--media_temperature", type=float, default=None, help="[1.0]")
  p.add_argument("--media_top_p", type=float, default=None, help="images and speech [0.7]")
  p.add_argument("--repetition_penalty", type=float, default=None, help="every mode (MIO's one value)")
  p.add_argument("--speech_repetition_penalty", type=float, default=None, help="[1.15]")
  p.add_argument("--image_repetition_penalty", type=float, default=None, help="[1.0]; MIO: 1.15 for video")
  p.add_argument("--stop_after_media", action="store_true", help="end at the first media block's close")
  p.add_argument("--num_beams", type=int, default=None, help="> 1: beam search, layouts kept [1]")
  p.add_argument("--length_penalty", type=float, default=None, help="beam score / length**this [1.0]")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--no_bos", action="store_true", help="do not start the prompt with BOS")
  p.add_argument("--text_model", default=None, help="SentencePiece .model override")
  p.add_argument("--out_prefix", default="generated", help="prefix of the files written")
  p.add_argument("--image_tokenizer", default=None, help="VQGAN folder: decode image blocks to .png")
  p.add_argument("--speech_tokenizer", default=None, help="SpeechTokenizer folder: decode speech to .wav")
  return p.parse_args(argv)


def _load_codes(path, what):
  import numpy as np
  if path is None:
    return None
  try:
    return np.load(path)
  except (OSError, ValueError) as e:
    raise ValueError(f"--{what}={path}: cannot read a .npy array: {e}") from e


def decoding(args):
  """presets.Decoding: the --task's (or the plain defaults), with each flag given replacing its fields."""
  from mio_jax.generate import presets

  settings = presets.resolve(args.task).settings
  for flag, fields in _SETTING_FLAGS.items():  # in order: the per-mode penalties after the common one
    value = getattr(args, flag)
    if value is not None:
      settings = dataclasses.replace(settings, **{f: value for f in fields})
  return presets.resolve(args.task, settings=settings, num_beams=args.num_beams,
                         length_penalty=args.length_penalty)


def run(args) -> dict:
  import numpy as np

  from mio_jax.generate.complete import complete
  from mio_jax.generate.load import load_model
  from mio_jax.generate.media_files import MediaWriter
  from mio_jax.generate.prompt import build_prompt

  from mio_jax.generate.load import checkpoint_image_tokens

  model, vocab = load_model(args.checkpoint, text_model=args.text_model)
  image_tokens = args.image_tokens or checkpoint_image_tokens(args.checkpoint)
  prompt = build_prompt(vocab, args.prompt, image_codes=_load_codes(args.image_codes, "image_codes"),
                        speech_codes=_load_codes(args.speech_codes, "speech_codes"), bos=not args.no_bos)
  chosen = decoding(args)
  ids, out = complete(model, vocab, prompt, max_new_tokens=args.max_new_tokens,
                      image_tokens=image_tokens, max_speech_frames=args.max_speech_frames,
                      settings=chosen.settings, num_beams=chosen.num_beams, length_penalty=chosen.length_penalty,
                      seed=args.seed, stop_after_media=args.stop_after_media)
  writer = MediaWriter(args.image_tokenizer, args.speech_tokenizer)
  written = []
  print(out.text)
  for kind, k, closed in out.complete:
    codes = (out.images if kind == "image" else out.speech)[k]
    paths = [f"{args.out_prefix}_{kind}{k}.npy"]
    np.save(paths[0], codes)
    # A block cut short cannot be decoded: its parts (speech) or grid (image) are incomplete.
    decodable = closed and codes.ndim == 2
    media = writer.write(kind, codes, f"{args.out_prefix}_{kind}{k}") if decodable else None
    if media:
      paths.append(media["file"])
    written += paths
    print(f"wrote {', '.join(paths)}" + ("" if closed else f" (incomplete: {kind} block cut by --max_new_tokens)"))
  return {"ids": ids, "output": out, "files": written, "decoding": chosen}


def main(argv=None):
  args = parse_args(argv)
  try:
    run(args)
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"generate: {e}")


if __name__ == "__main__":
  main()
