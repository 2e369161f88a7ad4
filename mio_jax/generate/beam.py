"""Beam search as Hugging Face's `generate(num_beams=k, do_sample=False)` runs it (MIO's infer.py
decodes text, images and speech this way: presets.py), over the KV cache, with MIO's block layouts.

What transformers' `GenerationMixin._beam_search` does (read in transformers 5.24,
generation/utils.py), and so this file:
- Scores are log_softmax of the raw logits, THEN the logits processors. So the repetition penalty
  (RepetitionPenaltyLogitsProcessor: a seen id's score * penalty when < 0, / penalty otherwise)
  acts on log-probabilities, all <= 0: a seen id's log p is multiplied by the penalty, and nothing
  is renormalised. Seen = every id of that beam's sequence, prompt included. The layout mask is
  applied the same way (as PrefixConstrainedLogitsProcessor: -inf after log_softmax, no
  renormalisation), so a beam's score is the model's own log p of its tokens, less the penalty.
- k running beams, scores 0, -1e9, ..., -1e9. Each step keeps the top K = max(2, 1 + #stop ids) * k
  of (running score + processed log p) over beams x vocab. A candidate "hits" when its token is a
  stop id, and every candidate does on the last step (max length). The next running beams are the
  top k of the candidates after -1e9 on the hits (never a finished beam unless too few others).
- A pool of k finished beams: a hit among the first k candidates (not the K - k spares) enters
  with score sum / (new tokens, stop included) ** length_penalty; the pool keeps its best k.
- early_stopping=False (HF's default; infer.py sets none): once every pool slot is filled and the
  best running score / (new tokens so far) ** length_penalty is <= the worst pool score, no more
  enter and the search ends (a heuristic, kept once true); it also ends when all K candidates hit.
- The result is the pool's best.
Not matched: MIO pins transformers 4.34.0, whose BeamSearchScorer / BeamHypotheses score the same
steps (log_softmax, then processors, top max(2, 1 + #stops) * k, hits only from the first k) but
finish differently: a finished beam is scored sum / (prompt + new ids, the stop id excluded) **
length_penalty; the heuristic compares the best candidate / (prompt + new ids) ** lp with the worst
finished score; at max length the k running beams join the pool. Finished beams of different
lengths can therefore rank differently there (and the search can end at another step).
Constraint state (constraints.py) is carried per running beam and re-gathered with the beams, as the
cache and the seen-ids are; stop ids are only allowed in text mode, so a beam cannot end in a block.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from mio_jax.generate import constraints
from mio_jax.generate.constraints import Layout
from mio_jax.generate.decode import init_cache
from mio_jax.generate.sampling import repetition_penalty as penalise
from mio_jax.model.token_logprobs import log_probs
from mio_jax.model.transformer import Transformer

_FAR = -1.0e9  # Hugging Face's "very large negative value" (not -inf: it is added to scores)


def beam_search(model: Transformer, prompt, *, num_beams: int, max_new_tokens: int,
                stop_ids: tuple[int, ...] = (), layout: Layout | None = None,
                length_penalty: float = 1.0, repetition_penalty=1.0,
                stop_after_media: bool = False) -> tuple[jax.Array, jax.Array]:
  """Best new ids [max_new_tokens] (the stop id repeats after it) and the finished pool's scores
  [num_beams] (sum of processed log p / length**length_penalty), best first.

  `repetition_penalty`: one value (Hugging Face's), or (text, image, speech) by each beam's mode.
  `layout` None decodes unconstrained; with a layout every beam follows MIO's block layouts, from
  the state the prompt leaves (a prompt ending in `<image>` continues that block).
  `stop_after_media`: a block's closing tag also ends a beam (counted as a stop id).
  """
  if num_beams < 1 or max_new_tokens < 1:
    raise ValueError(f"num_beams={num_beams} and max_new_tokens={max_new_tokens} must be >= 1")
  if isinstance(repetition_penalty, (int, float)):
    repetition_penalty = (repetition_penalty,) * len(constraints.MODES)
  penalties = tuple(float(p) for p in repetition_penalty)
  if len(penalties) != len(constraints.MODES) or min(penalties) <= 0:
    raise ValueError(f"repetition_penalty={repetition_penalty}: one value > 0, or one per mode {constraints.MODES}")
  stops = {int(i) for i in stop_ids}
  if stop_after_media:
    if layout is None:
      raise ValueError("stop_after_media needs a layout (the closing tags are the layout's)")
    stops |= {layout.image_end, layout.speech_end}
  graphdef, state = nnx.split(model)
  return _beam_search(graphdef, state, jnp.asarray(prompt, jnp.int32), jnp.float32(length_penalty),
                      jnp.asarray(penalties, jnp.float32), num_beams=num_beams, max_new_tokens=max_new_tokens,
                      stop_ids=tuple(sorted(stops)), layout=layout)


def _gather(tree, index):
  return jax.tree.map(lambda a: a[index], tree)


@functools.partial(jax.jit, static_argnames=("graphdef", "num_beams", "max_new_tokens", "stop_ids", "layout"))
def _beam_search(graphdef, state, prompt, length_penalty, penalty, *, num_beams, max_new_tokens, stop_ids, layout):
  model = nnx.merge(graphdef, state)
  # A padded vocabulary's extra ids are never candidates.
  k, prompt_len, vocab = num_beams, prompt.shape[0], model.cfg.used_vocab_size
  wide, steps = max(2, 1 + len(stop_ids)) * k, max_new_tokens
  cache = init_cache(model.cfg, 1, prompt_len + steps)
  logits, cache = model.decode(prompt[None], jnp.ones((1, prompt_len), jnp.int32),
                               jnp.arange(prompt_len, dtype=jnp.int32)[None], cache)
  tile = lambda a, axis: jnp.repeat(a, k, axis=axis)
  # Other entries (a tied head's kernel, Transformer.decode) are the same for every beam.
  cache = {**cache, "k": tile(cache["k"], 1), "v": tile(cache["v"], 1),
           "segment_ids": tile(cache["segment_ids"], 0)}
  logits = tile(logits[:, -1, :vocab], 0)
  seen = tile(jnp.zeros((1, vocab), bool).at[0, prompt].set(True), 0)
  if layout is not None:
    mode_state = _gather(constraints.state_after(layout, prompt[None]), jnp.zeros((k,), jnp.int32))
  else:
    mode_state = constraints.initial_state(k)
  stops = jnp.asarray(stop_ids or (-1,), jnp.int32)
  first_k = jnp.arange(wide) < k
  slots = jnp.arange(steps)[None, :]
  run_scores = jnp.full((k,), _FAR, jnp.float32).at[0].set(0.0)
  run_out = jnp.zeros((k, steps), jnp.int32)
  pool_out = jnp.zeros((k, steps), jnp.int32)
  pool_scores = jnp.full((k,), _FAR, jnp.float32)
  pool_done = jnp.zeros((k,), bool)

  def cond(carry):
    step, unsatisfied, all_hit = carry[:3]
    return (step < steps) & unsatisfied & ~all_hit

  def body(carry):
    (step, unsatisfied, _, logits, cache, mode_state, seen, run_scores, run_out, pool_out, pool_scores,
     pool_done, params) = carry
    logp = penalise(log_probs(logits), seen, penalty[mode_state.mode])  # log_softmax, then processors
    if layout is not None:
      logp = jnp.where(constraints.allowed_ids(layout, mode_state), logp, -jnp.inf)
    cand_scores, idx = jax.lax.top_k((run_scores[:, None] + logp).reshape(-1), wide)
    beam, token = idx // vocab, (idx % vocab).astype(jnp.int32)
    hit = jnp.isin(token, stops) | (step == steps - 1)
    cand_out = run_out[beam].at[:, step].set(token)

    # The finished pool: the first k candidates that hit, length-penalised, merged with the pool.
    length = (step + 1).astype(jnp.float32)
    entering = cand_scores / length ** length_penalty
    entering = entering + jnp.where(unsatisfied, 0.0, _FAR)
    entering = entering + jnp.where(hit & first_k, 0.0, _FAR)
    filled = jnp.where(slots > step, token[:, None], cand_out)  # the stop id repeats after it
    merged = jnp.concatenate([pool_scores, entering])
    pool_scores, pick = jax.lax.top_k(merged, k)
    pool_out = jnp.concatenate([pool_out, filled])[pick]
    pool_done = jnp.concatenate([pool_done, hit & first_k])[pick]

    # The next running beams: the best k candidates, hits pushed down.
    run_scores, keep = jax.lax.top_k(cand_scores + jnp.where(hit, _FAR, 0.0), k)
    origin, token, run_out = beam[keep], token[keep], cand_out[keep]
    cache = {**cache, "k": cache["k"][:, origin], "v": cache["v"][:, origin],
             "segment_ids": cache["segment_ids"][origin]}
    seen = seen[origin].at[jnp.arange(k), token].set(True)
    if layout is not None:
      mode_state = constraints.advance(layout, _gather(mode_state, origin), token)

    # HF's early-stop heuristic (early_stopping=False): the best running beam at today's length.
    best_possible = run_scores[0] / length ** length_penalty
    worst_finished = jnp.where(pool_done, jnp.min(pool_scores), _FAR)
    unsatisfied = unsatisfied & jnp.any(best_possible > worst_finished)

    step_model = nnx.merge(graphdef, params)  # rebuilt inside this trace (nnx rule)
    pos = jnp.full((k, 1), prompt_len + step, jnp.int32)
    logits, cache = step_model.decode(token[:, None], jnp.ones((k, 1), jnp.int32), pos, cache)
    return (step + 1, unsatisfied, jnp.all(hit), logits[:, -1, :vocab], cache, mode_state, seen, run_scores,
            run_out, pool_out, pool_scores, pool_done, params)

  carry = (jnp.zeros((), jnp.int32), jnp.ones((), bool), jnp.zeros((), bool), logits, cache, mode_state, seen,
           run_scores, run_out, pool_out, pool_scores, pool_done, state)
  carry = jax.lax.while_loop(cond, body, carry)
  pool_out, pool_scores = carry[9], carry[10]
  return pool_out[0], pool_scores
