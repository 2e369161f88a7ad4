"""config.eval.samples: captions, transcripts, images and speech generated at in-loop evaluation land
in TensorBoard, read back from the event file; the captions against tasks.py's greedy captioning."""

import glob
import io
import os
import struct

import numpy as np
import pytest
from train_helpers import smoke_on_shards

from mio_jax.data.pipeline import heldout_paths
from mio_jax.evaluate.tasks import generate_texts, prompt_and_reference
from mio_jax.generate.load import load_model
from mio_jax.generate.media_files import MediaWriter
from mio_jax.tokenize.tiny_tokenizers import trained_tiny_speechtokenizer_dir, trained_tiny_vqgan_dir
from mio_jax.train.eval_samples import EvalSamples
from mio_jax.train.evaluation import read_pairing_samples
from mio_jax.train.loop import train


def read_events(workdir) -> list:
  """Every Event of the run's TensorBoard files (TFRecord framing: length, crc, data, crc)."""
  from tensorboardX.proto.event_pb2 import Event
  events = []
  for path in sorted(glob.glob(os.path.join(workdir, "tensorboard", "events*"))):
    with open(path, "rb") as f:
      data = f.read()
    at = 0
    while at < len(data):
      (length,) = struct.unpack("<Q", data[at:at + 8])
      events.append(Event.FromString(data[at + 12:at + 12 + length]))
      at += 12 + length + 4
  return events


def summary_values(workdir) -> dict[tuple[int, str], object]:
  return {(e.step, v.tag): v for e in read_events(workdir) for v in e.summary.value}


# A 2-step smoke run that compiles four generation programs and decodes with both tiny tokenizers:
# ~85 s on 2 cores, and in-loop samples are opt-in, so the whole module is in `make test-slow`.
pytestmark = pytest.mark.slow

@pytest.fixture(scope="module")
def sampled_run(mini_shards, tmp_path_factory):
  """Two steps with one held-out prompt per task, media decoded by the committed tiny tokenizers."""
  workdir = tmp_path_factory.mktemp("eval_samples")
  c = smoke_on_shards(mini_shards, steps=2, checkpoint_every=2)
  c.data.seq_len = 320
  c.eval.update(every=2, batches=1, mixed_shards=mini_shards, pairing_samples=0, samples=1,
                sample_tokens=8, image_tokenizer=trained_tiny_vqgan_dir(),
                speech_tokenizer=trained_tiny_speechtokenizer_dir())
  train(c, str(workdir))
  return c, workdir


def test_samples_at_each_evaluation_step(sampled_run):
  _, workdir = sampled_run
  values = summary_values(workdir)
  for step in (1, 2):
    for tag in ("samples/captioning/0/text_summary", "samples/asr/0/text_summary",
                "samples/image_from_caption/0/prompt/text_summary",
                "samples/speech_from_text/0/prompt/text_summary"):
      assert (step, tag) in values, (step, tag, sorted(values))
    assert values[(step, "samples/image_from_caption/0")].HasField("image")
    assert values[(step, "samples/speech_from_text/0")].HasField("audio")


def test_captions_are_tasks_greedy_captions(sampled_run, mini_shards):
  c, workdir = sampled_run
  model, vocab = load_model(str(workdir))  # the step-2 parameters the last samples came from
  samples = read_pairing_samples(heldout_paths(c.data, mini_shards), 1)
  for task, kind in (("captioning", "image_text"), ("asr", "speech_text")):
    sample = [s for s in samples if s.kind == kind][0]
    prompt, reference = prompt_and_reference(sample, vocab, stage=1)
    expected = generate_texts(model, vocab, [prompt], max_new_tokens=8, batch_size=1,
                              image_tokens=256)[0]
    text = summary_values(workdir)[(2, f"samples/{task}/0/text_summary")].tensor.string_val[0].decode()
    assert text.startswith(f"**reference:** {reference}\n\n**generated:** "), text
    written = text.split("**generated:** ", 1)[1]
    assert " ".join(written.split()) == expected, (written, expected)


def test_media_are_the_tokenizers_decodings(sampled_run):
  import soundfile as sf
  from PIL import Image
  _, workdir = sampled_run
  values = summary_values(workdir)
  image = values[(2, "samples/image_from_caption/0")].image
  pixels = np.asarray(Image.open(io.BytesIO(image.encoded_image_string)))
  assert pixels.shape == (256, 256, 3) == (image.height, image.width, image.colorspace)  # 16 x 16 codes
  assert pixels.std() > 0  # a decoded picture, not a blank
  audio = values[(2, "samples/speech_from_text/0")].audio
  wave, rate = sf.read(io.BytesIO(audio.encoded_audio_string))
  assert rate == audio.sample_rate == 16000 and len(wave) == audio.length_frames > 0
  assert len(wave) % 320 == 0  # whole codec frames: the tiny SpeechTokenizer's hop is 8*5*4*2


def test_media_without_a_tokenizer_are_written_as_codes():
  from tensorboardX import summary
  samples = EvalSamples.__new__(EvalSamples)
  samples.media = MediaWriter(None, None)
  grid = np.arange(6).reshape(2, 3)
  text = samples._media_summary(summary, "t", "image", grid).value[0].tensor.string_val[0].decode()
  assert "config.eval.image_tokenizer is empty" in text and "    3 4 5" in text, text
  speech = samples._media_summary(summary, "t", "speech", grid).value[0].tensor.string_val[0].decode()
  assert "speech codes [2, 3]" in speech and "config.eval.speech_tokenizer is empty" in speech, speech
