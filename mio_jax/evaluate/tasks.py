"""Task metrics of a checkpoint on held-out samples: captioning, ASR and per-modality perplexity.

Captioning: each held-out image-text sample's prompt is its understanding template up to the caption
("[BOS] {image} The caption of this image is" in the default template set, mio_jax/data/templates.py),
exactly the ids training saw before the caption (pairing.scored_tokens); the model continues it
greedily (MIO's text decoding) until EOS, and the text it wrote is scored against the sample's caption
with CIDEr-D and BLEU-4. ASR: the same with speech-text samples and the transcription template
(" The transcription of this speech is"; the "paper" set: "Transcribe this speech:" in stages 1-2),
scored with WER and CER (text_metrics.py).
Perplexity: perplexity.py.

    report = task_metrics(model, vocab, samples, stage=3, max_samples=16)
    print(format_table(report))
"""

from __future__ import annotations

import glob
import re

import jax
import numpy as np

from mio_jax.data.shards import Sample, ShardReader
from mio_jax.data.templates import DEFAULT_TEMPLATE_SET
from mio_jax.evaluate import text_metrics
from mio_jax.evaluate.pairing import MEDIA, text_of, scored_tokens
from mio_jax.evaluate.perplexity import modality_perplexity
from mio_jax.generate.constraints import Layout
from mio_jax.generate.decode import Settings, generate, left_padded
from mio_jax.generate.prompt import split_output
from mio_jax.vocab import Vocabulary

TASKS = {"captioning": "image_text", "asr": "speech_text"}
_MEDIA_PLACEHOLDER = re.compile(r"\[(image|speech) \d+\]")


def read_samples(patterns: str) -> list[Sample]:
  """Every sample of the shards matching the comma-separated globs, in sorted path order."""
  paths = sorted({p for pattern in patterns.split(",") if pattern for p in glob.glob(pattern)})
  if not paths:
    raise FileNotFoundError(f"--data={patterns}: no shard matches")
  samples = []
  for path in paths:
    reader = ShardReader(path)
    samples += [reader[i] for i in range(len(reader))]
    reader.close()
  return samples


def prompt_and_reference(sample: Sample, vocab: Vocabulary, stage: int,
                         template_set: str = DEFAULT_TEMPLATE_SET) -> tuple[np.ndarray, str]:
  """The template's ids before the text (the prompt) and the text itself (the reference)."""
  ids, weights = scored_tokens(sample, vocab, stage, template_set)
  return ids[:int(np.flatnonzero(weights)[0])], text_of(sample).strip()


def _image_tokens(samples: list[Sample]) -> int:
  """Codes per image block for constrained decoding: the held-out images' grid (256 if none)."""
  for s in samples:
    for part in s.parts:
      if part["type"] == "image":
        return int(np.asarray(part["codes"]).size)
  return 256


def generate_texts(model, vocab: Vocabulary, prompts: list[np.ndarray], *, max_new_tokens: int,
                   batch_size: int, image_tokens: int) -> list[str]:
  """Greedy continuation of each prompt, up to EOS / <|im_end|>, as text. Media blocks the model
  opens are dropped; special tokens it writes stay, as their pieces (they are not the reference's)."""
  layout = Layout.from_vocab(vocab, image_tokens)
  stops = tuple(sorted({vocab.eos, vocab.im_end}))
  texts = []
  for start in range(0, len(prompts), batch_size):
    chunk = prompts[start:start + batch_size]
    rows = chunk + [chunk[0]] * (batch_size - len(chunk))  # one batch shape: fewer compiles
    batch, lengths = left_padded(rows)  # each row decodes as it would alone (decode.py)
    out, _ = generate(model, batch, key=jax.random.key(0), max_new_tokens=max_new_tokens, layout=layout,
                      settings=Settings(), stop_ids=stops, prompt_lengths=lengths)
    for ids in np.asarray(out)[:len(chunk)]:
      text = split_output(vocab, ids, stops).text
      texts.append(" ".join(_MEDIA_PLACEHOLDER.sub(" ", text).split()))
  return texts


def _task(model, vocab, samples, *, task, stage, template_set, max_new_tokens, batch_size,
          image_tokens) -> dict:
  pairs = [prompt_and_reference(s, vocab, stage, template_set) for s in samples]
  hypotheses = generate_texts(model, vocab, [p for p, _ in pairs], max_new_tokens=max_new_tokens,
                              batch_size=batch_size, image_tokens=image_tokens)
  references = [r for _, r in pairs]
  if task == "captioning":
    scores = text_metrics.caption_scores(hypotheses, [[r] for r in references])
    per_item = scores.pop("cider_d_per_item")
  else:
    scores = text_metrics.asr_scores(hypotheses, references)
    per_item = None
  examples = [{"source": s.source, "reference": r, "hypothesis": h}
              for s, r, h in zip(samples, references, hypotheses)]
  if per_item is not None:
    for row, score in zip(examples, per_item):
      row["cider_d"] = score
  return {"samples": len(samples), **scores, "examples": examples}


def task_metrics(model, vocab: Vocabulary, samples: list[Sample], *, stage: int, max_samples: int = 0,
                 max_new_tokens: int = 32, batch_size: int = 8,
                 template_set: str = DEFAULT_TEMPLATE_SET) -> dict:
  """{"captioning": {...}, "asr": {...}, "perplexity": {...}} over the held-out samples; each task uses
  the first `max_samples` samples of its kind (0: all). A task with no samples of its kind is left out."""
  if stage not in (1, 2, 3, 4):
    raise ValueError(f"stage={stage}: the templates exist for stages 1 to 4")
  template_stage = min(stage, 3)  # stage 4 (ChatML SFT) starts from stage 3: scored in its templates
  report = {"stage": stage, "template_stage": template_stage, "template_set": template_set,
            "max_new_tokens": max_new_tokens}
  chosen = []
  for task, kind in TASKS.items():
    group = [s for s in samples if s.kind == kind]
    group = group[:max_samples] if max_samples else group
    chosen += group
    if group:
      report[task] = _task(model, vocab, group, task=task, stage=template_stage, template_set=template_set,
                           max_new_tokens=max_new_tokens, batch_size=batch_size,
                           image_tokens=_image_tokens(samples))
  others = [s for s in samples if s.kind not in MEDIA]
  report["perplexity"] = {"samples": len(chosen + others), **modality_perplexity(
      model, vocab, chosen + others, stage=template_stage, batch_size=batch_size, template_set=template_set)}
  return report


def format_table(report: dict) -> str:
  """The report as a few aligned lines."""
  lines = []
  if "captioning" in report:
    c = report["captioning"]
    lines.append(f"captioning   {c['samples']:4d} held-out   CIDEr-D {c['cider_d']:7.3f}   BLEU-4 {c['bleu_4']:6.3f}")
  if "asr" in report:
    a = report["asr"]
    lines.append(f"ASR          {a['samples']:4d} held-out   WER {a['wer']:11.3f}   CER {a['cer']:9.3f}")
  p = report["perplexity"]
  cells = [f"{name} {p[name]['perplexity']:.2f} ({p[name]['tokens']} tokens)"
           for name in ("text", "image", "speech", "all") if p[name]["tokens"]]
  lines.append(f"perplexity   {p['samples']:4d} held-out   " + ", ".join(cells))
  return "\n".join(lines)
