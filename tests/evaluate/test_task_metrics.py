"""Held-out task metrics (mio_jax/evaluate/tasks.py, perplexity.py): perplexity against a numpy
computation from the model's logits, batched greedy captions against one prompt at a time."""

import os

import numpy as np
import pytest
from flax import nnx

from mio_jax.data.shards import Sample
from mio_jax.data.templates import TemplateOptions, build_tokens
from mio_jax.evaluate import tasks, text_metrics
from mio_jax.evaluate.perplexity import modality_perplexity
from mio_jax.generate.complete import complete
from mio_jax.model.transformer import ModelConfig, Transformer
from mio_jax.vocab import Vocabulary

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VOCAB = Vocabulary.from_config(dict(text_model=os.path.join(ROOT, "data", "vocab", "mini.model"),
                                    image_codes=16, speech_codebook=8, speech_layers=4,
                                    code_order="image_first"))


def _image(i, caption):
  codes = (np.arange(4).reshape(2, 2) * (i + 1)) % 16
  return Sample("image_text", [{"type": "image", "codes": codes}, {"type": "text", "text": caption}], f"img:{i}")


def _speech(i, transcript, frames):
  codes = (np.arange(8 * frames).reshape(8, frames) * (i + 1)) % 8
  return Sample("speech_text", [{"type": "speech", "codes": codes}, {"type": "text", "text": transcript}],
                f"spch:{i}")


SAMPLES = [_image(0, "a red circle"), _speech(0, "count to six", 3), _image(1, "a blue square on white"),
           _speech(1, "hello, how are you today", 5), _image(2, "a green dot"),
           Sample("text", [{"type": "text", "text": "plain text counts as text"}], "text:0")]


@pytest.fixture(scope="module")
def model():
  cfg = ModelConfig(vocab_size=VOCAB.size, embed_dim=32, num_layers=2, num_heads=4, num_kv_heads=2,
                    head_dim=8, mlp_dim=64, dtype="float32", remat_policy="none")
  return Transformer(cfg, rngs=nnx.Rngs(7))


def _numpy_nll(model, ids):
  """-log softmax(logits)[next id] of one unpadded sequence, in float64."""
  n = len(ids)
  logits = np.asarray(model(ids[None, :-1], np.ones((1, n - 1), np.int32), np.arange(n - 1)[None]), np.float64)[0]
  logp = logits - logits.max(-1, keepdims=True)
  logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
  return -logp[np.arange(n - 1), ids[1:]]


@pytest.mark.parametrize("stage", [pytest.param(1, marks=pytest.mark.slow), 3])  # stage 1: ~6 s, slow set
def test_perplexity_per_modality_equals_numpy_from_the_logits(model, stage):
  # batch_size 4 over 6 samples: a second, short batch filled with copies, lengths padded to 64.
  report = modality_perplexity(model, VOCAB, SAMPLES, stage=stage, batch_size=4)
  text_hi = VOCAB.text_size + 6  # text pieces and the 6 special tokens
  bounds = {"text": (0, text_hi), "image": (VOCAB.image_base, VOCAB.image_base + 16),
            "speech": (VOCAB.speech_base, VOCAB.speech_base + 4 * 8), "all": (0, VOCAB.size)}
  sums = {name: [0.0, 0] for name in bounds}
  directions = set()
  for i, sample in enumerate(SAMPLES):
    # The training layout with this sample's own seed: the direction (understanding or generation).
    ids, weights = build_tokens(sample, VOCAB, np.random.default_rng([0, i]), TemplateOptions(stage=stage))
    directions.add((sample.kind, int(ids[1]) in (VOCAB.image_start, VOCAB.speech_start)))
    nll, targets = _numpy_nll(model, ids), ids[1:]
    for name, (lo, hi) in bounds.items():
      m = (weights[1:] > 0) & (targets >= lo) & (targets < hi)
      sums[name][0] += nll[m].sum()
      sums[name][1] += int(m.sum())
  assert len(directions) > 2  # the seeds drew both directions for some kind
  for name, (total, tokens) in sums.items():
    assert tokens > 0 and report[name]["tokens"] == tokens
    np.testing.assert_allclose(report[name]["loss"], total / tokens, rtol=1e-5)
    np.testing.assert_allclose(report[name]["perplexity"], np.exp(total / tokens), rtol=1e-5)
  assert report["all"]["tokens"] == sum(report[m]["tokens"] for m in ("text", "image", "speech"))


def test_a_modality_without_tokens_has_no_perplexity(model):
  report = modality_perplexity(model, VOCAB, [SAMPLES[-1]], stage=1)
  assert report["image"] == {"tokens": 0, "loss": None, "perplexity": None}
  assert report["text"]["tokens"] > 0


def test_prompts_are_the_training_template_before_the_text():
  prompt, reference = tasks.prompt_and_reference(SAMPLES[0], VOCAB, stage=1)
  assert reference == "a red circle"
  assert prompt[0] == VOCAB.bos and prompt[1] == VOCAB.image_start
  # Verbatim text: the space after </image> decodes back (mio_release, MIO's infer.py wording).
  assert VOCAB.decode(prompt[prompt.tolist().index(VOCAB.image_end) + 1:]) == " The caption of this image is"
  for template_set, stage, words in (("mio_release", 1, " The transcription of this speech is"),
                                     ("mio_release", 3, " The transcription of this speech is"),
                                     ("paper", 1, " Transcribe this speech:"),
                                     ("paper", 3, " The transcription of this speech is:")):
    prompt, reference = tasks.prompt_and_reference(SAMPLES[3], VOCAB, stage, template_set)
    assert reference == "hello, how are you today"
    assert VOCAB.decode(prompt[prompt.tolist().index(VOCAB.speech_end) + 1:]) == words


@pytest.mark.slow  # one generation a prompt
def test_batched_greedy_texts_equal_one_prompt_at_a_time(model):
  prompts = [tasks.prompt_and_reference(s, VOCAB, 3)[0] for s in SAMPLES[:5]]  # lengths differ
  batched = tasks.generate_texts(model, VOCAB, prompts, max_new_tokens=8, batch_size=2, image_tokens=4)
  alone = []
  for p in prompts:
    _, out = complete(model, VOCAB, p, max_new_tokens=8, image_tokens=4)
    alone.append(" ".join(tasks._MEDIA_PLACEHOLDER.sub(" ", out.text).split()))
  assert batched == alone


def test_task_metrics_report(model):
  report = tasks.task_metrics(model, VOCAB, SAMPLES, stage=4, max_samples=2, max_new_tokens=6, batch_size=4)
  assert (report["stage"], report["template_stage"]) == (4, 3)
  captions, asr = report["captioning"], report["asr"]
  assert [e["source"] for e in captions["examples"]] == ["img:0", "img:1"]  # max_samples: the first 2
  assert [e["source"] for e in asr["examples"]] == ["spch:0", "spch:1"]
  hyps = [e["hypothesis"] for e in captions["examples"]]
  expected = text_metrics.caption_scores(hyps, [["a red circle"], ["a blue square on white"]])
  assert captions["cider_d"] == expected["cider_d"] and captions["bleu_4"] == expected["bleu_4"]
  assert [e["cider_d"] for e in captions["examples"]] == expected["cider_d_per_item"]
  expected = text_metrics.asr_scores([e["hypothesis"] for e in asr["examples"]],
                                     ["count to six", "hello, how are you today"])
  assert asr["wer"] == expected["wer"] and asr["cer"] == expected["cer"]
  # Perplexity over the chosen pairs and the other held-out kinds (the text sample).
  assert report["perplexity"]["samples"] == 5
  table = tasks.format_table(report)
  assert f"CIDEr-D {captions['cider_d']:7.3f}" in table and f"WER {asr['wer']:11.3f}" in table
  assert f"text {report['perplexity']['text']['perplexity']:.2f}" in table
