"""Per-task decoding defaults against MIO's infer.py, quoted, and the CLI's flag overrides."""

import re

import pytest

from mio_jax.generate import presets
from mio_jax.generate.decode import Settings
from run_helpers import launch_module

# github MIO-Team/MIO, infer.py: the docstring after "# TODO: set your generation config here."
# (verbatim, trailing spaces dropped).
INFER_PY = """
- text generation:
    num_beams=5, do_sample=False, repetition_penalty=1.0, temperature=1.0, length_penalty=1.0
- image generation:
    num_beams=5, do_sample=False, repetition_penalty=1.15, temperature=1.0, top_p=0.7, length_penalty=1.0
- tts:
    num_beams=1, do_sample=True, repetition_penalty=1.15, temperature=1.0, top_p=0.7, length_penalty=1.0
- speech generation (not tts):
    num_beams=5, do_sample=False, repetition_penalty=2.0, temperature=1.0, top_p=0.7, length_penalty=1.0
- speech to speech:
    num_beams=5, do_sample=False, repetition_penalty=1.15, temperature=1.0, top_p=0.7, length_penalty=1.0
- video generation:
    num_beams=1, do_sample=True, repetition_penalty=1.15, temperature=1.0, top_p=0.7, length_penalty=1.0
- multimodal interleaved generation:
    num_beams=1, do_sample=True, repetition_penalty=1.15, temperature=1.0, top_p=0.7, length_penalty=1.0
"""
OUR_NAME = {"text generation": "text", "image generation": "image_generation", "tts": "tts",
            "speech generation (not tts)": "speech_generation", "speech to speech": "speech_to_speech",
            "video generation": "video_generation", "multimodal interleaved generation": "interleaved"}


def test_table_is_infer_py():
  rows = re.findall(r"- (.+?):\s*\n\s+(.+)", INFER_PY)
  assert len(rows) == len(presets.TASKS) == 7
  for name, values in rows:
    fields = dict(kv.split("=") for kv in values.split(", "))
    expected = presets.TaskConfig(num_beams=int(fields["num_beams"]), do_sample=fields["do_sample"] == "True",
                                  repetition_penalty=float(fields["repetition_penalty"]),
                                  top_p=float(fields.get("top_p", 1.0)), temperature=float(fields["temperature"]),
                                  length_penalty=float(fields["length_penalty"]))
    assert presets.TASKS[OUR_NAME[name]] == expected, name


def test_a_task_applies_to_every_mode():
  beams = presets.task_decoding("speech_generation")
  assert (beams.num_beams, beams.length_penalty) == (5, 1.0)
  # do_sample=False: greedy when one beam is asked for; top-p unused (Hugging Face adds no warper).
  assert beams.settings == Settings(0.0, 1.0, 2.0, 0.0, 1.0, 2.0, 0.0, 1.0, 2.0)
  tts = presets.task_decoding("tts")
  assert tts.num_beams == 1 and tts.settings == Settings(1.0, 0.7, 1.15, 1.0, 0.7, 1.15, 1.0, 0.7, 1.15)
  with pytest.raises(ValueError, match="unknown decoding task 'asr'"):
    presets.task_decoding("asr")


def test_resolve_overrides_and_plain_defaults():
  assert presets.resolve() == presets.Decoding(Settings(), 1, 1.0)
  got = presets.resolve("image_generation", num_beams=1, length_penalty=1.5)
  assert (got.num_beams, got.length_penalty, got.settings.image_penalty) == (1, 1.5, 1.15)
  with pytest.raises(ValueError, match="num_beams=0"):
    presets.resolve(num_beams=0)


def test_cli_task_then_flags():
  cli = launch_module("generate")
  args = lambda *extra: cli.parse_args(["--checkpoint", "x", "--prompt", "y", *extra])
  assert cli.decoding(args()) == presets.resolve()  # no task, no flags: unchanged defaults
  chosen = cli.decoding(args("--task", "image_generation", "--speech_repetition_penalty", "1.3"))
  assert chosen.num_beams == 5
  assert (chosen.settings.text_penalty, chosen.settings.image_penalty, chosen.settings.speech_penalty) == (
      1.15, 1.15, 1.3)
  chosen = cli.decoding(args("--task", "tts", "--num_beams", "3", "--repetition_penalty", "2.0",
                             "--image_repetition_penalty", "1.0", "--temperature", "0"))
  assert chosen.num_beams == 3 and chosen.settings.text_temperature == 0.0
  assert (chosen.settings.text_penalty, chosen.settings.image_penalty, chosen.settings.speech_penalty) == (
      2.0, 1.0, 2.0)
  assert chosen.settings.speech_top_p == 0.7
