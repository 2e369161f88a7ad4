"""Constrained decoding with a random-init model sampled at temperature 1, top-p 1: the model itself
prefers no structure, so the block layouts checked here come from the constraint alone."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mio_jax.generate import constraints
from mio_jax.generate.constraints import Layout
from mio_jax.generate.decode import Settings, generate
from mio_jax.model.transformer import ModelConfig, Transformer
from mio_jax.vocab import Vocabulary

VOCAB = Vocabulary(text_size=40, image_codes=16, speech_codebook=8, speech_layers=4)
LAYOUT = Layout.from_vocab(VOCAB, image_tokens=5, max_speech_frames=6)
CFG = ModelConfig(vocab_size=VOCAB.size, embed_dim=32, num_layers=2, num_heads=4, num_kv_heads=2,
                  head_dim=8, mlp_dim=64, dtype="float32", remat_policy="none")
FREE = Settings(text_temperature=1.0, image_top_p=1.0, speech_top_p=1.0, speech_penalty=1.0)
ROWS = 6


def sample(prompt, layout, new=34, seed=0):
  model = Transformer(CFG, rngs=nnx.Rngs(3))
  out, _ = generate(model, jnp.asarray([prompt] * ROWS), key=jax.random.key(seed), max_new_tokens=new,
                    layout=layout, settings=FREE)
  return np.asarray(out)


def in_range(ids, modality, layer=0):
  lo, hi = VOCAB.code_range(modality, layer)
  return all(lo <= i < hi for i in ids)


def is_code(i):
  try:
    VOCAB.code_of(i)
    return True
  except ValueError:
    return False


def test_image_block_is_exactly_image_tokens_codes_then_close():
  outs = sample([1, 7, VOCAB.image_start], LAYOUT)
  for row in outs.tolist():
    assert in_range(row[:5], "image"), row
    assert row[5] == VOCAB.image_end, row
    opens = [k for k in range(6, len(row)) if row[k] in (VOCAB.image_start, VOCAB.speech_start)]
    text = row[6:opens[0] if opens else len(row)]  # text mode again until a block opens
    assert not any(is_code(i) or i in (VOCAB.image_end, VOCAB.speech_end) for i in text), row


def test_speech_output_is_four_equal_parts_each_in_its_layer():
  outs = sample([1, 9, VOCAB.speech_start], LAYOUT)
  lengths = set()
  for row in outs.tolist():
    end = row.index(VOCAB.speech_end)  # must close within 4 * 6 + 1 tokens
    body = row[:end]
    assert len(body) % 4 == 0, row
    n = len(body) // 4
    assert 1 <= n <= 6, row
    for layer in range(4):
      assert in_range(body[layer * n:(layer + 1) * n], "speech", layer), (layer, row)
    np.testing.assert_array_equal(VOCAB.speech_codes(body).shape, (4, n))
    lengths.add(n)
  assert len(lengths) > 1  # n is the model's choice, not a constant


@pytest.mark.slow  # ~2.5-4 s on 2 cores; the layout's state machine and block tests stay
def test_without_constraints_the_same_model_breaks_the_layouts():
  outs = sample([1, 7, VOCAB.image_start], None, new=5)
  assert not all(in_range(row, "image") for row in outs.tolist())


@pytest.mark.slow  # ~2.5-4 s on 2 cores; the layout's state machine and block tests stay
def test_prompt_ending_inside_a_block_resumes_its_state():
  # Prompt already holds 3 of the 5 image codes: exactly 2 more, then </image>.
  prompt = [1, VOCAB.image_start] + [VOCAB.image_base + c for c in (1, 2, 3)]
  for row in sample(prompt, LAYOUT, new=4).tolist():
    assert in_range(row[:2], "image") and row[2] == VOCAB.image_end, row


def test_state_machine_by_hand():
  # <spch> a a b b c c d d </spch> with n = 2: walk it and check the allowed sets at each step.
  a, b = VOCAB.code_range("speech", 0)[0], VOCAB.code_range("speech", 1)[0]
  c, d = VOCAB.code_range("speech", 2)[0], VOCAB.code_range("speech", 3)[0]
  seq = [VOCAB.speech_start, a, a + 1, b, b + 2, c, c, d, d + 7, VOCAB.speech_end]
  state = constraints.initial_state(1)
  expect_ranges = [None, (a,), (a, b), (a, b), (b,), (c,), (c,), (d,), (d,), "end", None]
  for i, token in enumerate(seq):
    allowed = np.asarray(constraints.allowed_ids(LAYOUT, state)[0])
    want = expect_ranges[i]
    if want == "end":
      assert np.flatnonzero(allowed).tolist() == [VOCAB.speech_end]
    elif want is not None:
      expected = np.zeros(VOCAB.size, bool)
      for lo in want:
        expected[lo:lo + 8] = True
      np.testing.assert_array_equal(allowed, expected, err_msg=f"step {i}")
    assert allowed[token], (i, token)
    state = constraints.advance(LAYOUT, state, jnp.asarray([token]))
  assert int(state.mode[0]) == constraints.TEXT


@pytest.mark.slow  # ~2.5-4 s on 2 cores; the layout's state machine and block tests stay
def test_stop_after_media_ends_each_row_at_its_closing_tag():
  model = Transformer(CFG, rngs=nnx.Rngs(3))
  for opener, closer in ((VOCAB.image_start, VOCAB.image_end), (VOCAB.speech_start, VOCAB.speech_end)):
    prompt = jnp.asarray([[1, 7, opener]] * ROWS)
    free, _ = generate(model, prompt, key=jax.random.key(0), max_new_tokens=34, layout=LAYOUT, settings=FREE)
    out, done = generate(model, prompt, key=jax.random.key(0), max_new_tokens=34, layout=LAYOUT,
                         settings=FREE, stop_after_media=True)
    assert np.asarray(done).all()
    for row, free_row in zip(np.asarray(out).tolist(), np.asarray(free).tolist()):
      end = row.index(closer)
      assert row[:end + 1] == free_row[:end + 1]  # the same draws up to the close ...
      assert row[end:] == [closer] * (len(row) - end)  # ... then the closing tag repeats
      assert free_row[end + 1:] != row[end + 1:]  # without the flag the row goes on in text


# MIO's voice-mode system prompt names the tags in its text ("... starting with <spch> and ending
# with </spch>.", tokenization_mio.py MIO_VOICE_MODE_SYSTEM) and infer.py's Instruct TTS request
# ends "Start with <spch>."; MIO's tokenizer gives those words the tags' ids. Text ids stand in here.
VOICE_SYSTEM = [1, 20, VOCAB.speech_start, 21, 22, VOCAB.speech_end, 23]
TTS_REQUEST = [24, VOCAB.speech_start, 25, 26, 27]  # "Start with" <spch> "." <|im_end|> "assistant\n"


def test_tags_written_in_text_leave_the_prompt_in_text_mode():
  def state(prompt):
    return tuple(int(a[0]) for a in constraints.state_after(LAYOUT, jnp.asarray([prompt])))

  assert state(VOICE_SYSTEM + TTS_REQUEST) == (constraints.TEXT, 0, 0, 0)
  assert state(VOICE_SYSTEM + TTS_REQUEST + [VOCAB.speech_start]) == (constraints.SPEECH, 0, 0, 0)
  a = VOCAB.code_range("speech", 0)[0]
  assert state(VOICE_SYSTEM + [VOCAB.speech_start, a, a + 1]) == (constraints.SPEECH, 0, 2, 0)
  assert state([VOCAB.image_start, 30, VOCAB.image_start, VOCAB.image_base]) == (constraints.IMAGE, 0, 1, 0)


@pytest.mark.slow  # ~2.5-4 s on 2 cores; the layout's state machine and block tests stay
def test_voice_mode_prompt_ending_in_spch_gets_four_equal_parts():
  for row in sample(VOICE_SYSTEM + TTS_REQUEST + [VOCAB.speech_start], LAYOUT).tolist():
    body = row[:row.index(VOCAB.speech_end)]
    n = len(body) // 4
    assert len(body) == 4 * n and n >= 1, row
    for layer in range(4):
      assert in_range(body[layer * n:(layer + 1) * n], "speech", layer), (layer, row)
