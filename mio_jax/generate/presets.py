"""Per-task decoding defaults, as MIO's released infer.py sets `generation_config` (github
MIO-Team/MIO, infer.py, the docstring "Typically, the following generation_config performs the best").

    decoding = resolve("image_generation")       # 5 beams, repetition penalty 1.15
    decoding = resolve("tts")                    # top-p 0.7 sampling, penalty 1.15
    decoding = resolve("text", num_beams=1)      # a given value overrides: greedy

MIO applies one generation_config to every generated token (Hugging Face `generate`), so a task's
settings are the same in text, image and speech mode. With do_sample=False, Hugging Face ignores
top_p and temperature (no warpers): beams (num_beams > 1) or greedy. Our beam search never samples
(beam sampling, do_sample with num_beams > 1, is in no row of infer.py). Without a task the defaults
are this codebase's per-modality `Settings()` (greedy text, top-p 0.7 media, 1.15 speech), 1 beam.
"""

from __future__ import annotations

import dataclasses

from mio_jax.generate.decode import Settings


@dataclasses.dataclass(frozen=True)
class TaskConfig:
  """One row of infer.py's table (its keys, its values)."""
  num_beams: int
  do_sample: bool
  repetition_penalty: float
  top_p: float = 1.0  # infer.py lists 0.7 for the media tasks; unused when do_sample is False
  temperature: float = 1.0
  length_penalty: float = 1.0


# infer.py's rows in its own order (text, image generation, tts, speech generation (not tts), speech
# to speech, video generation, multimodal interleaved generation); every row has temperature=1.0 and
# length_penalty=1.0. tests/generate/test_presets.py quotes the docstring and checks this table.
TASKS = {
    "text": TaskConfig(num_beams=5, do_sample=False, repetition_penalty=1.0),
    "image_generation": TaskConfig(num_beams=5, do_sample=False, repetition_penalty=1.15, top_p=0.7),
    "tts": TaskConfig(num_beams=1, do_sample=True, repetition_penalty=1.15, top_p=0.7),
    "speech_generation": TaskConfig(num_beams=5, do_sample=False, repetition_penalty=2.0, top_p=0.7),
    "speech_to_speech": TaskConfig(num_beams=5, do_sample=False, repetition_penalty=1.15, top_p=0.7),
    "video_generation": TaskConfig(num_beams=1, do_sample=True, repetition_penalty=1.15, top_p=0.7),
    "interleaved": TaskConfig(num_beams=1, do_sample=True, repetition_penalty=1.15, top_p=0.7),
}


@dataclasses.dataclass(frozen=True)
class Decoding:
  """What `complete` runs: per-mode settings (sampling, and the repetition penalty of beam search),
  the beam count (1: sample / greedy with `settings`) and beam search's length penalty."""
  settings: Settings = Settings()
  num_beams: int = 1
  length_penalty: float = 1.0


def task_decoding(task: str) -> Decoding:
  if task not in TASKS:
    raise ValueError(f"unknown decoding task {task!r}; known: {', '.join(TASKS)}")
  t = TASKS[task]
  # do_sample=False is greedy (temperature 0 here) with one beam; top_p only matters when sampling.
  temperature = t.temperature if t.do_sample else 0.0
  top_p = t.top_p if t.do_sample else 1.0
  fields = {f"{m}_{name}": value for m in ("text", "image", "speech")
            for name, value in (("temperature", temperature), ("top_p", top_p),
                                ("penalty", t.repetition_penalty))}
  return Decoding(Settings(**fields), t.num_beams, t.length_penalty)


def resolve(task: str | None = None, *, settings: Settings | None = None, num_beams: int | None = None,
            length_penalty: float | None = None) -> Decoding:
  """The task's defaults (or the plain defaults when `task` is None), each given value overriding."""
  base = task_decoding(task) if task is not None else Decoding()
  out = Decoding(settings if settings is not None else base.settings,
                 int(num_beams) if num_beams is not None else base.num_beams,
                 float(length_penalty) if length_penalty is not None else base.length_penalty)
  if out.num_beams < 1:
    raise ValueError(f"num_beams={out.num_beams} must be >= 1")
  return out
