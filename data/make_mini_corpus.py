"""Build the mini corpus under data/mini: a small, real, exactly described multimodal corpus.

  python data/make_mini_corpus.py [--out data/mini] [--seed 0]

Every sample is synthesised, so each caption, transcript and description is exact:
  images/     256x256 PNG scenes of coloured shapes ("a red circle above a blue square")
  speech/     16 kHz mono 16-bit WAV from espeak-ng, with the text it spoke
  videos/     2 s MP4 (H.264, 8 fps, 256x256) of a shape moving; some cut to a second scene
  manifests   image_text.jsonl, speech_text.jsonl, video_text.jsonl, interleaved.jsonl, text.jsonl,
              conversation.jsonl (one sample per line; media paths relative to data/mini)

Needs Pillow, numpy, soundfile, soxr, PyAV and the espeak-ng binary (`apt-get install espeak-ng`).
Generation is seeded: the same seed gives the same captions, layouts, sentences and voices.
"""

import argparse
import io
import json
import os
import re
import subprocess

import av
import numpy as np
import soundfile as sf
import soxr
from PIL import Image, ImageDraw

SIZE = 256
SAMPLE_RATE = 16000
COLORS = {
    "red": (220, 30, 30), "green": (30, 170, 50), "blue": (30, 70, 220), "yellow": (240, 220, 30),
    "purple": (140, 40, 170), "orange": (250, 140, 20), "white": (250, 250, 250), "black": (10, 10, 10),
}
BACKGROUNDS = {"gray": (128, 128, 128), "white": (250, 250, 250), "black": (10, 10, 10),
               "light blue": (170, 210, 240)}
SHAPES = ("circle", "square", "triangle", "diamond")
RELATIONS = {"above": (0, -1), "below": (0, 1), "left of": (-1, 0), "right of": (1, 0)}
VOICES = ("en-us", "en-gb", "en-us+f3", "en-gb+f2", "en-us+m3")


def draw_shape(draw, shape, color, cx, cy, r):
  box = (cx - r, cy - r, cx + r, cy + r)
  if shape == "circle":
    draw.ellipse(box, fill=color)
  elif shape == "square":
    draw.rectangle(box, fill=color)
  elif shape == "triangle":
    draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=color)
  else:
    draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=color)


def pick_colors(rng, background, n):
  """n distinct shape colours, none equal to the background (so every shape is visible)."""
  names = [c for c in COLORS if COLORS[c] != BACKGROUNDS[background]]
  return [names[i] for i in rng.choice(len(names), size=n, replace=False)]


def render_scene(rng):
  """One image and its exact caption: a single sized shape, or two shapes in a spatial relation."""
  background = list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
  img = Image.new("RGB", (SIZE, SIZE), BACKGROUNDS[background])
  draw = ImageDraw.Draw(img)
  if rng.random() < 0.4:
    (color,) = pick_colors(rng, background, 1)
    shape = SHAPES[rng.integers(len(SHAPES))]
    large = rng.random() < 0.5
    r = 80 if large else 36
    cx, cy = (int(v) for v in rng.integers(r + 8, SIZE - r - 8, size=2))
    draw_shape(draw, shape, COLORS[color], cx, cy, r)
    size_word = "large" if large else "small"
    return img, fix_articles(f"a {size_word} {color} {shape} on a {background} background")
  c1, c2 = pick_colors(rng, background, 2)
  s1, s2 = (SHAPES[i] for i in rng.integers(len(SHAPES), size=2))
  relation = list(RELATIONS)[rng.integers(len(RELATIONS))]
  dx, dy = RELATIONS[relation]
  jitter = rng.integers(-20, 21, size=2)
  cx, cy = SIZE // 2 + int(jitter[0]), SIZE // 2 + int(jitter[1])
  draw_shape(draw, s1, COLORS[c1], cx + dx * 62, cy + dy * 62, 40)
  draw_shape(draw, s2, COLORS[c2], cx - dx * 62, cy - dy * 62, 40)
  return img, fix_articles(f"a {c1} {s1} {relation} a {c2} {s2} on a {background} background")


NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
                "eighteen")


def fix_articles(text):
  """'a orange' -> 'an orange': captions are exact English, not templates with holes."""
  return re.sub(r"\b([Aa]) (?=[aeiou])", r"\1n ", text)


def save_png(img, path):
  img.save(path, format="PNG", optimize=True)


def sentence(rng):
  """A short spoken sentence (2-8 words) so clips stay under 4 s."""
  c = list(COLORS)[rng.integers(len(COLORS))]
  s = SHAPES[rng.integers(len(SHAPES))]
  n = int(rng.integers(2, 10))
  w, w2 = NUMBER_WORDS[n], NUMBER_WORDS[2 * n]  # spelled out: the transcript is what is spoken
  forms = [
      f"the {c} {s}", f"I see a {c} {s}", f"there are {w} shapes here",
      f"the {s} is {c}", f"please draw a {c} {s}", f"{w} plus {w} makes {w2}",
      f"the {s} moves to the {('left', 'right')[n % 2]}", f"hello, how are you today",
      f"count to {w}", f"a {c} {s} on a gray background",
  ]
  return fix_articles(forms[rng.integers(len(forms))])


def speak(text, voice, speed):
  """espeak-ng to a 16 kHz float waveform, with leading/trailing silence trimmed."""
  wav = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "--stdout", text],
                       check=True, capture_output=True).stdout
  x, sr = sf.read(io.BytesIO(wav), dtype="float32")
  x = soxr.resample(x, sr, SAMPLE_RATE)
  loud = np.nonzero(np.abs(x) > 0.01)[0]
  x = x[max(0, loud[0] - 800):loud[-1] + 800]
  return x


def write_video(path, frames, fps=8):
  with av.open(path, "w", format="mp4") as container:
    stream = container.add_stream("libx264", rate=fps)
    stream.width, stream.height, stream.pix_fmt = SIZE, SIZE, "yuv420p"
    # Fixed encoder options so the bytes depend only on the frames.
    stream.options = {"crf": "28", "preset": "medium", "threads": "1"}
    for f in frames:
      for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)


def moving_shape_frames(n_frames, background, color, shape, direction):
  frames = []
  for t in range(n_frames):
    img = Image.new("RGB", (SIZE, SIZE), BACKGROUNDS[background])
    a = 50 + (SIZE - 100) * t / max(1, n_frames - 1)
    cx, cy = {"left to right": (a, 128), "right to left": (SIZE - a, 128),
              "top to bottom": (128, a), "bottom to top": (128, SIZE - a)}[direction]
    draw_shape(ImageDraw.Draw(img), shape, COLORS[color], int(cx), int(cy), 36)
    frames.append(np.asarray(img))
  return frames


def make_video(rng):
  background = list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
  (color,) = pick_colors(rng, background, 1)
  shape = SHAPES[rng.integers(len(SHAPES))]
  directions = ("left to right", "right to left", "top to bottom", "bottom to top")
  direction = directions[rng.integers(4)]
  desc = f"a {color} {shape} moves from {direction} on a {background} background"
  if rng.random() < 0.3:  # a scene cut halfway: keyframe extraction should find two scenes
    bg2 = [b for b in BACKGROUNDS if b != background][rng.integers(len(BACKGROUNDS) - 1)]
    (c2,) = pick_colors(rng, bg2, 1)
    s2 = SHAPES[rng.integers(len(SHAPES))]
    d2 = directions[rng.integers(4)]
    frames = (moving_shape_frames(8, background, color, shape, direction)
              + moving_shape_frames(8, bg2, c2, s2, d2))
    desc += f", then the scene cuts to a {c2} {s2} moving from {d2} on a {bg2} background"
  else:
    frames = moving_shape_frames(16, background, color, shape, direction)
  return frames, fix_articles(desc)


TEXT_TOPICS = [
    "{a} plus {b} is {c}.", "{c} minus {b} is {a}.", "a {col} {shape} has {k} corners.",
    "the {shape} is painted {col}.", "there are {a} {col} shapes and {b} {col2} shapes here.",
    "a circle has no corners.", "a square has four equal sides.", "a triangle has three sides.",
    "red and yellow make orange.", "blue and yellow make green.", "red and blue make purple.",
    "the number after {a} is {a1}.", "the number before {a1} is {a}.",
    "{a} times {b} is {ab}.", "a diamond is a square turned on its corner.",
]
CORNERS = {"circle": "no", "square": "four", "triangle": "three", "diamond": "four"}


def text_sentence(rng):
  a, b = (int(v) for v in rng.integers(2, 10, size=2))
  col, col2 = pick_colors(rng, "gray", 2)
  shape = SHAPES[rng.integers(len(SHAPES))]
  t = TEXT_TOPICS[rng.integers(len(TEXT_TOPICS))]
  s = t.format(a=a, b=b, c=a + b, col=col, col2=col2, shape=shape, k=CORNERS[shape],
               a1=a + 1, ab=a * b)
  s = fix_articles(s)
  return s[0].upper() + s[1:]


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "mini"))
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--images", type=int, default=200)
  ap.add_argument("--speech", type=int, default=100)
  ap.add_argument("--videos", type=int, default=20)
  args = ap.parse_args()
  rng = np.random.default_rng(args.seed)
  out = args.out
  for d in ("images", "speech", "videos"):
    os.makedirs(os.path.join(out, d), exist_ok=True)
  manifests = {k: [] for k in ("image_text", "speech_text", "video_text", "interleaved", "text",
                               "conversation")}

  captions = []
  for i in range(args.images):
    img, caption = render_scene(rng)
    rel = f"images/{i:04d}.png"
    save_png(img, os.path.join(out, rel))
    captions.append((rel, caption))
    manifests["image_text"].append({"image": rel, "caption": caption})

  transcripts = []
  for i in range(args.speech):
    text = sentence(rng)
    voice = VOICES[rng.integers(len(VOICES))]
    wave = speak(text, voice, int(rng.integers(150, 200)))
    rel = f"speech/{i:04d}.wav"
    sf.write(os.path.join(out, rel), wave, SAMPLE_RATE, subtype="PCM_16")
    transcripts.append((rel, text))
    manifests["speech_text"].append({"audio": rel, "transcript": text})

  descriptions = []
  for i in range(args.videos):
    frames, desc = make_video(rng)
    rel = f"videos/{i:04d}.mp4"
    write_video(os.path.join(out, rel), frames)
    descriptions.append((rel, desc))
    manifests["video_text"].append({"video": rel, "description": desc})

  # Interleaved documents reuse the media above, so each part's text describes it exactly.
  for i in range(10):
    parts = [{"type": "text", "text": f"Document {i}: a short story about shapes."}]
    for j in range(3):
      rel, cap = captions[(7 * i + 3 * j) % len(captions)]
      parts += [{"type": "image", "path": rel}, {"type": "text", "text": f"This picture shows {cap}."}]
    if i % 2 == 0:
      rel, desc = descriptions[i % len(descriptions)]
      parts += [{"type": "text", "text": "Then a clip:"}, {"type": "video", "path": rel},
                {"type": "text", "text": f"In it, {desc}."}]
    else:
      rel, tr = transcripts[i % len(transcripts)]
      parts += [{"type": "text", "text": "Someone said:"}, {"type": "speech", "path": rel},
                {"type": "text", "text": f"The words were: {tr}."}]
    manifests["interleaved"].append({"parts": parts})

  for i in range(60):
    n = int(rng.integers(3, 8))
    manifests["text"].append({"text": " ".join(text_sentence(rng) for _ in range(n))})

  for i in range(30):
    task = i % 5
    if task == 0:
      rel, cap = captions[(11 * i) % len(captions)]
      msgs = [{"role": "user", "content": [{"type": "image", "path": rel},
                                           {"type": "text", "text": "What is in this image?"}]},
              {"role": "assistant", "content": cap[0].upper() + cap[1:] + "."}]
    elif task == 1:
      rel, cap = captions[(13 * i + 5) % len(captions)]
      msgs = [{"role": "user", "content": f"Draw {cap}."},
              {"role": "assistant", "content": [{"type": "image", "path": rel}]}]
    elif task == 2:
      rel, tr = transcripts[(3 * i) % len(transcripts)]
      msgs = [{"role": "user", "content": [{"type": "speech", "path": rel},
                                           {"type": "text", "text": "Transcribe this speech."}]},
              {"role": "assistant", "content": tr}]
    elif task == 3:
      rel, tr = transcripts[(7 * i + 1) % len(transcripts)]
      msgs = [{"role": "user", "content": f'Say "{tr}".'},
              {"role": "assistant", "content": [{"type": "speech", "path": rel}]}]
    else:
      rel, desc = descriptions[i % len(descriptions)]
      msgs = [{"role": "user", "content": [{"type": "video", "path": rel},
                                           {"type": "text", "text": "Describe the video."}]},
              {"role": "assistant", "content": desc[0].upper() + desc[1:] + "."},
              {"role": "user", "content": "How many shapes are in the first frame?"},
              {"role": "assistant", "content": "One."}]
    manifests["conversation"].append({"messages": msgs})

  for kind, rows in manifests.items():
    with open(os.path.join(out, f"{kind}.jsonl"), "w", encoding="utf-8") as f:
      for row in rows:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
  print(f"wrote {sum(map(len, manifests.values()))} samples under {out}")


if __name__ == "__main__":
  main()
