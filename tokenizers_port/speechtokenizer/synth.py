"""Synthetic speech for tests and benchmarks: espeak-ng sentences as 16 kHz mono float32.

`committed_clips` reads the 100 espeak-ng utterances committed in data/mini/speech (5 voices,
0.8-2.2 s; data/make_mini_corpus.py made them), so tests need no espeak-ng on the machine.
`corpus`/`render` synthesise new ones where espeak-ng is installed (the agreement script).
Voices, speeds and pitches vary, and no clip is a multiple of the 320-sample hop, so edge
padding is exercised the way real clips exercise it.
"""

import glob
import io
import os
import shutil
import subprocess

import numpy as np

SENTENCES = [
    "Yes.",
    "Turn left here.",
    "The quick brown fox jumps over the lazy dog.",
    "Please call Stella and ask her to bring these things from the store.",
    "A rainbow is a division of white light into many beautiful colors.",
    "Six spoons of fresh snow peas, five thick slabs of blue cheese.",
    "We also need a small plastic snake and a big toy frog for the kids.",
    "She can scoop these things into three red bags, and we will go meet her Wednesday.",
    "Good morning.",
    "The weather tomorrow looks cold, with light rain in the afternoon.",
    "Numbers like seventeen, forty two and one hundred are hard to say quickly.",
    "Where did you put the keys?",
    "Speech tokenizers turn sound into discrete codes that a language model can read.",
    "Open the window, it is far too warm in this room.",
    "He walked slowly along the river, watching the boats drift past in the evening light.",
    "Thank you very much.",
    "Every residual layer adds a finer detail of the voice on top of the content.",
    "The meeting has been moved to half past three on Thursday.",
    "Could you spell that again, one letter at a time?",
    "Bright stars shone above the quiet village as the last train left the station.",
    "No.",
    "Milk, eggs, bread, butter and a bag of apples.",
    "The library closes early on public holidays, so plan your visit carefully.",
    "I think the answer is somewhere in the middle.",
    "Wind turbines spun steadily on the hills, feeding power into the grid all night long.",
    "Hello there, how are you doing today?",
    "Keep the receipt in case you need to return it.",
    "Autumn leaves covered the path in shades of orange, red and gold.",
    "Stop.",
    "The orchestra tuned their instruments while the audience slowly found their seats.",
    "It was the best of times, it was the worst of times.",
    "Send the report before noon, and copy the whole team.",
]
VOICES = ["en-us", "en", "en-us+f3", "en+m3", "en-us+f2"]


MINI_SPEECH = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                           "data", "mini", "speech")


def committed_clips(start: int, n: int, hop: int = 320) -> list[np.ndarray]:
  """Clips start..start+n-1 of data/mini/speech as float32 16 kHz; none a multiple of `hop`."""
  import soundfile
  files = sorted(glob.glob(os.path.join(MINI_SPEECH, "*.wav")))[start:start + n]
  if len(files) < n:
    raise FileNotFoundError(f"{MINI_SPEECH}: wanted clips {start}..{start + n - 1}, found {len(files)}")
  clips = []
  for i, path in enumerate(files):
    audio, rate = soundfile.read(path, dtype="float32")
    if rate != 16000:
      raise ValueError(f"{path}: {rate} Hz, expected 16000")
    if audio.shape[0] % hop == 0:
      audio = audio[:-1 - i % (hop // 2)]
    clips.append(audio)
  return clips


def have_espeak() -> bool:
  return shutil.which("espeak-ng") is not None


def render(text: str, voice: str = "en-us", speed: int = 160, pitch: int = 50,
           sample_rate: int = 16000) -> np.ndarray:
  """One sentence -> float32 mono at `sample_rate` (soxr resampling from espeak's rate)."""
  import soundfile
  import soxr
  wav = subprocess.run(["espeak-ng", "--stdout", "-v", voice, "-s", str(speed), "-p", str(pitch),
                        text], check=True, capture_output=True).stdout
  audio, rate = soundfile.read(io.BytesIO(wav), dtype="float32")
  if audio.ndim == 2:
    audio = audio.mean(1)
  return soxr.resample(audio, rate, sample_rate).astype(np.float32)


def corpus(n: int, hop: int = 320, seed: int = 0) -> list[np.ndarray]:
  """n utterances of varied voice, speed, pitch and length; none a multiple of `hop` samples."""
  rng = np.random.default_rng(seed)
  clips = []
  for i in range(n):
    clip = render(SENTENCES[i % len(SENTENCES)], VOICES[i % len(VOICES)],
                  speed=int(rng.integers(130, 200)), pitch=int(rng.integers(30, 70)))
    if clip.shape[0] % hop == 0:
      clip = clip[:-1 - int(rng.integers(hop // 2))]
    clips.append(clip)
  return clips
