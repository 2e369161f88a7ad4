"""Learning evidence: the loss of a text given its own media against the same text given other media.

Each held-out image-text (speech-text) sample is laid out in MIO's understanding template
("{image} The caption of this image is {caption}", "{speech} The transcription of this speech is
..." in the default template set; mio_jax/data/templates.py) and its
caption (transcript) tokens plus EOS are scored twice: after its own media, and after the media of
another held-out sample whose text differs. Nothing else changes between the two, so a lower loss
with the real pairing can only come from information that went from the raw media through the
tokenizer, the vocabulary, the shards and the packed training batches into the model.

    results = pairing_losses(model, vocab, samples, stage=1)
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mio_jax.data.shards import Sample
from mio_jax.data.templates import DEFAULT_TEMPLATE_SET, TemplateOptions, build_tokens, media_and_text
from mio_jax.model.token_logprobs import cross_entropy
from mio_jax.vocab import Vocabulary

MEDIA = {"image_text": "image", "speech_text": "speech"}


@dataclasses.dataclass(frozen=True)
class PairingResult:
  kind: str
  samples: int
  real: float  # mean loss (nats per scored token) with each sample's own media
  mismatched: float  # the same texts after another sample's media
  wins: float  # fraction of samples whose real loss is the lower one
  margin_stderr: float = float("nan")  # the standard error of the margin over the samples

  @property
  def margin(self) -> float:
    return self.mismatched - self.real

  def line(self) -> str:
    return (f"{self.kind:<12} {self.samples:3d} held-out: real {self.real:.3f}, mismatched "
            f"{self.mismatched:.3f} nats/token, margin {self.margin:+.3f}, real lower in "
            f"{self.wins:.0%}")


def text_of(sample: Sample) -> str:
  return media_and_text(sample, MEDIA[sample.kind], sample.source)[1]


def _media(sample: Sample) -> dict:
  return media_and_text(sample, MEDIA[sample.kind], sample.source)[0]


def _with_media(sample: Sample, media: dict) -> Sample:
  kind = MEDIA[sample.kind]
  return dataclasses.replace(sample, parts=[media if p["type"] == kind else p for p in sample.parts])


def mismatched_partners(samples: list[Sample]) -> list[int]:
  """For each sample, the nearest later one (cyclically) whose text differs."""
  texts = [text_of(s) for s in samples]
  partners = []
  for i, text in enumerate(texts):
    others = [(i + k) % len(texts) for k in range(1, len(texts))]
    j = next((j for j in others if texts[j] != text), None)
    if j is None:
      raise ValueError(f"{samples[i].source}: no other held-out sample with a different text to pair it with")
    partners.append(j)
  return partners


def scored_tokens(sample: Sample, vocab: Vocabulary, stage: int,
                  template_set: str = DEFAULT_TEMPLATE_SET) -> tuple[np.ndarray, np.ndarray]:
  """The understanding template's ids and a weight of 1 on the answer's tokens (the text) and EOS."""
  opts = TemplateOptions(stage=stage, image_generation_prob=0.0, video_generation_prob=0.0,
                         speech_generation_prob=0.0, template_set=template_set)  # always media first
  ids, _ = build_tokens(sample, vocab, np.random.default_rng(0), opts, where=sample.source)
  prompt, _ = build_tokens(sample, vocab, np.random.default_rng(0), opts, where=sample.source,
                           prompt_only=True)
  if ids[:len(prompt)].tolist() != prompt.tolist():  # the answer's first piece merged into the prompt's
    raise ValueError(f"{sample.source}: the template's prompt does not tokenize as a prefix of the sample")
  weights = np.zeros(len(ids), np.float32)
  weights[len(prompt):] = 1.0
  return ids, weights


@functools.partial(jax.jit, static_argnums=0)
def _token_losses(graphdef, state, ids, segment_ids):
  model = nnx.merge(graphdef, state)
  positions = jnp.broadcast_to(jnp.arange(ids.shape[1]), ids.shape)
  logits = model(ids[:, :-1], segment_ids[:, :-1], positions[:, :-1])
  return cross_entropy(logits, ids[:, 1:])[1]


def token_losses(model, sequences: list[np.ndarray], *, length_multiple: int = 1) -> np.ndarray:
  """-log p of each next token [len(sequences), length - 1], float32: row r's first len(r) - 1 entries
  are its tokens' losses, the rest is padding. Sequences are right-padded to a common length, rounded
  up to `length_multiple` (fewer shapes to compile)."""
  length = -(-max(len(ids) for ids in sequences) // length_multiple) * length_multiple
  ids = np.zeros((len(sequences), length), np.int32)
  segments = np.zeros_like(ids)
  for row, seq in enumerate(sequences):
    ids[row, :len(seq)], segments[row, :len(seq)] = seq, 1
  graphdef, state = nnx.split(model)
  return np.asarray(_token_losses(graphdef, state, jnp.asarray(ids), jnp.asarray(segments)))


def sequence_losses(model, sequences: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
  """Mean weighted next-token loss of each (ids, weights) sequence, right-padded into one batch."""
  losses = token_losses(model, [ids for ids, _ in sequences])
  weights = np.zeros((len(sequences), losses.shape[1] + 1), np.float32)
  for row, (_, w) in enumerate(sequences):
    weights[row, :len(w)] = w
  w = weights[:, 1:]  # the weight of a token is the weight of predicting it
  return (losses * w).sum(1) / w.sum(1)


def paired_sequences(group: list[Sample], partners: list[int], vocab: Vocabulary, stage: int,
                     template_set: str = DEFAULT_TEMPLATE_SET) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[tuple[np.ndarray, np.ndarray]]]:
  """(ids, weights) of each sample of one kind after its own media, and after the media of its
  partner (mismatched_partners)."""
  real = [scored_tokens(s, vocab, stage, template_set) for s in group]
  swapped = [scored_tokens(_with_media(s, _media(group[j])), vocab, stage, template_set)
             for s, j in zip(group, partners)]
  return real, swapped


def pairing_losses(model, vocab: Vocabulary, samples: list[Sample], *, stage: int,
                   template_set: str = DEFAULT_TEMPLATE_SET) -> list[PairingResult]:
  """One PairingResult per pair kind present in `samples` (image_text, speech_text)."""
  results = []
  for kind in MEDIA:
    group = [s for s in samples if s.kind == kind]
    if len(group) < 2:
      continue
    real, swapped = paired_sequences(group, mismatched_partners(group), vocab, stage, template_set)
    losses = sequence_losses(model, real + swapped)
    real_loss, swapped_loss = losses[:len(group)], losses[len(group):]
    gaps = swapped_loss - real_loss
    results.append(PairingResult(kind, len(group), float(real_loss.mean()), float(swapped_loss.mean()),
                                 float((real_loss < swapped_loss).mean()),
                                 float(gaps.std(ddof=1) / len(gaps) ** 0.5)))
  return results
