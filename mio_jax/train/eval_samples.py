"""Samples a person can look at, generated at in-loop evaluation (config.eval.samples; docs/metrics.md).

From the first `eval.samples` held-out image_text and speech_text samples of `eval.mixed_shards`,
four tasks, each prompted exactly as training lays the sample out (mio_jax/data/templates.py):

    captioning          "[BOS] {image} The caption of this image is"                  -> text (greedy)
    asr                 "[BOS] {speech} The transcription of this speech is"          -> text (greedy)
    image_from_caption  "[BOS] Please generate an image of ``{caption}'': <image>"   -> one image block
    speech_from_text    "[BOS] Please generate a speech of ``{text}'': <spch>"       -> one speech block

(in config.data.template_set, here the default "mio_release"; "paper" words them as the paper does).

Texts go to TensorBoard as text summaries (with the reference); an image or speech block as an image
or audio summary, decoded by `eval.image_tokenizer` / `eval.speech_tokenizer` (tokenizer dirs as the
tokenization job takes them), or, without that tokenizer, as a text summary of its codes. Media are
sampled (MIO's top-p settings) from a key fixed by `eval.seed`, so a sample changes only with the
parameters. Generation is mio_jax/generate/decode.py's jitted loop on the run's sharded parameters,
one program per task (compiled at the first evaluation); it runs in single-process runs only (a
multi-process run logs once that it skips samples).
"""

from __future__ import annotations

import logging

import jax
import numpy as np
from flax import nnx

from mio_jax.data.pipeline import heldout_paths
from mio_jax.data.templates import DEFAULT_TEMPLATE_SET, TemplateOptions, build_tokens, media_and_text
from mio_jax.evaluate.pairing import text_of
from mio_jax.evaluate.tasks import prompt_and_reference
from mio_jax.generate.constraints import Layout
from mio_jax.generate.decode import Settings, generate, left_padded
from mio_jax.generate.media_files import MediaWriter
from mio_jax.generate.prompt import split_output
from mio_jax.train.code_order import training_vocab
from mio_jax.train.evaluation import read_pairing_samples
from mio_jax.vocab import Vocabulary

log = logging.getLogger("mio_jax.train")
# task -> (sample kind, what it generates)
TASKS = {"captioning": ("image_text", "text"), "asr": ("speech_text", "text"),
         "image_from_caption": ("image_text", "image"), "speech_from_text": ("speech_text", "speech")}


def generation_prompt(sample, vocab: Vocabulary, stage: int,
                      template_set: str = DEFAULT_TEMPLATE_SET) -> np.ndarray:
  """The generation template's ids up to and including the media block's opening tag."""
  opts = TemplateOptions(stage=stage, image_generation_prob=1.0, speech_generation_prob=1.0,
                         template_set=template_set)  # probability 1: always text first
  return build_tokens(sample, vocab, np.random.default_rng(0), opts, where=sample.source,
                      prompt_only=True)[0]


class SampleTask:
  """One task's fixed prompts (one left-padded batch) and how much to generate."""

  def __init__(self, name: str, samples: list, vocab: Vocabulary, stage: int, text_tokens: int,
               template_set: str = DEFAULT_TEMPLATE_SET):
    self.name, self.output = name, TASKS[name][1]
    if self.output == "text":
      pairs = [prompt_and_reference(s, vocab, stage, template_set) for s in samples]
      self.prompts, self.references = [p for p, _ in pairs], [r for _, r in pairs]
      self.max_new_tokens, self.speech_frames = text_tokens, 0
    else:
      self.prompts = [generation_prompt(s, vocab, stage, template_set) for s in samples]
      self.references = [text_of(s).strip() for s in samples]
      media = [np.asarray(media_and_text(s, self.output)[0]["codes"]) for s in samples]
      if self.output == "image":  # the held-out images' grid, then </image>
        self.speech_frames, self.max_new_tokens = 0, media[0].size + 1
      else:  # up to the longest reference utterance, every layer the vocabulary keeps, then </spch>
        self.speech_frames = max(int(m.shape[-1]) for m in media)
        self.max_new_tokens = vocab.speech_layers * self.speech_frames + 1
    self.batch, self.lengths = left_padded(self.prompts)  # each row decodes as it would alone


class EvalSamples:
  """`write(writer, step, params)`: generate every task's samples and write them (process 0)."""

  def __init__(self, config, graphdef: nnx.GraphDef):
    e = config.eval
    self.graphdef, self.tasks = graphdef, []
    if not e.samples:
      return
    if jax.process_count() > 1:
      log.info("config.eval.samples=%d: samples are generated in single-process runs only; this run "
               "has %d processes, no samples", e.samples, jax.process_count())
      return
    if not e.mixed_shards:
      log.info("config.eval.samples=%d but config.eval.mixed_shards is empty: no held-out prompts, "
               "no samples", e.samples)
      return
    self.vocab = training_vocab(config)
    self.seed = int(e.seed)
    self.media = MediaWriter(e.image_tokenizer or None, e.speech_tokenizer or None)
    samples = read_pairing_samples(heldout_paths(config.data, e.mixed_shards), int(e.samples))
    stage = min(int(config.data.template_stage), 3)
    for name, (kind, _) in TASKS.items():
      group = [s for s in samples if s.kind == kind]
      if group:
        self.tasks.append(SampleTask(name, group, self.vocab, stage, int(e.sample_tokens),
                                     config.data.template_set))
    missing = sorted({k for k, _ in TASKS.values()} - {s.kind for s in samples})
    if missing:
      log.info("eval samples: no held-out %s samples in config.eval.mixed_shards", ", ".join(missing))

  def generate(self, params, task: SampleTask) -> list:
    """One Output (mio_jax/generate/prompt.py) per prompt of the task."""
    image_tokens = self.max_image_tokens()
    layout = Layout.from_vocab(self.vocab, image_tokens, task.speech_frames)
    stops = tuple(sorted({self.vocab.eos, self.vocab.im_end}))
    model = nnx.merge(self.graphdef, params)
    out, _ = generate(model, task.batch, key=jax.random.key(self.seed), max_new_tokens=task.max_new_tokens,
                      layout=layout, settings=Settings(), stop_ids=stops, prompt_lengths=task.lengths,
                      stop_after_media=task.output != "text")
    opening = {"text": [], "image": [self.vocab.image_start], "speech": [self.vocab.speech_start]}
    return [split_output(self.vocab, np.concatenate([opening[task.output], ids]).astype(np.int32), stops)
            for ids in np.asarray(out)]

  def max_image_tokens(self) -> int:
    """Codes per image block: the held-out images' grid (the image task's block less </image>)."""
    for task in self.tasks:
      if task.output == "image":
        return task.max_new_tokens - 1
    return 256

  def summaries(self, params) -> list:
    """tensorboardX Summary protos of every task's samples."""
    from tensorboardX import summary
    out = []
    for task in self.tasks:
      for i, (output, reference) in enumerate(zip(self.generate(params, task), task.references)):
        tag = f"samples/{task.name}/{i}"
        if task.output == "text":
          out.append(summary.text(tag, f"**reference:** {reference}\n\n**generated:** {output.text}"))
          continue
        codes = (output.images if task.output == "image" else output.speech)
        if not codes or not output.complete or not output.complete[0][2]:
          out.append(summary.text(tag, f"**prompt:** {reference}\n\n(no complete {task.output} block: "
                                       f"generated {output.text!r})"))
          continue
        out.append(summary.text(tag + "/prompt", f"**prompt:** {reference}"))
        out.append(self._media_summary(summary, tag, task.output, np.asarray(codes[0])))
    return out

  def _media_summary(self, summary, tag: str, kind: str, codes: np.ndarray):
    decoder = self.media.image_dir if kind == "image" else self.media.speech_dir
    if not decoder:  # no tokenizer to decode with: the codes themselves, as text
      rows = codes if codes.ndim == 2 else codes[None]
      grid = "\n".join("    " + " ".join(str(int(c)) for c in row) for row in rows)
      key = "eval.image_tokenizer" if kind == "image" else "eval.speech_tokenizer"
      return summary.text(tag, f"{kind} codes {list(codes.shape)} (config.{key} is empty: not "
                               f"decoded)\n\n{grid}")
    if kind == "image":
      return summary.image(tag, self.media.image_pixels(codes), dataformats="HWC")
    wave, rate = self.media.speech_wave(codes)
    return summary.audio(tag, wave, sample_rate=rate)

  def write(self, writer, step: int, params) -> int:
    """Generates the samples (every process that holds the parameters) and writes them; -> count."""
    if not self.tasks:
      return 0
    summaries = self.summaries(params)
    writer.write_summaries(step, summaries)
    return len(summaries)
