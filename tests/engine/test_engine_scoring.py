"""Scoring continuations on the engine thread (squish.engine.scoring), on a tiny random model."""

import math

import pytest

from squish.engine.engine import ChatRequest
from squish.engine.events import Error
from squish.engine.scoring import ScoreRequest, Scores

MESSAGES = [{"role": "user", "content": "Pick a color."}]
OPTIONS = ["red", "green and blue", "a very long answer that takes many tokens"]


def scored(engine, request) -> Scores:
    events = list(engine.score(request))
    errors = [e for e in events if isinstance(e, Error)]
    assert not errors, errors
    (scores,) = [e for e in events if isinstance(e, Scores)]
    return scores


def reference(model_dir, prefix: str, option: str) -> float:
    """The same log-likelihood computed here, with one forward pass over prompt and continuation:
    the tokens scored are those after what every option's tokens share (the prefix, mostly)."""
    import mlx.core as mx
    from mlx_lm import load

    model, tokenizer = load(str(model_dir))
    prompt = list(tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True))
    encoded = [tokenizer.encode(prefix + o, add_special_tokens=False) for o in OPTIONS]
    shared = 0
    while all(len(e) > shared + 1 for e in encoded) and len({e[shared] for e in encoded}) == 1:
        shared += 1
    tokens = prompt + tokenizer.encode(prefix + option, add_special_tokens=False)
    logits = model(mx.array(tokens)[None])[0].astype(mx.float32)
    logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    return sum(logprobs[i - 1, tokens[i]].item() for i in range(len(prompt) + shared, len(tokens)))


@pytest.mark.parametrize("prefix", ["", "My answer: "])
def test_scores_are_the_log_likelihoods_of_the_continuations(tiny_engine, tiny_model, prefix):
    scores = scored(tiny_engine, ScoreRequest(MESSAGES, OPTIONS, prefix=prefix))
    assert len(scores.logprobs) == len(OPTIONS) and all(math.isfinite(v) and v < 0 for v in scores.logprobs)
    assert scores.tokens[2] > scores.tokens[0]
    for option, value in zip(OPTIONS, scores.logprobs):
        assert value == pytest.approx(reference(tiny_model, prefix, option), abs=2e-3)


def test_the_prompt_stays_cached_for_the_next_score_and_generation(tiny_engine):
    first = scored(tiny_engine, ScoreRequest(MESSAGES, OPTIONS, session="scoring-cache"))
    again = scored(tiny_engine, ScoreRequest(MESSAGES, OPTIONS, session="scoring-cache"))
    assert first.cached_tokens == 0 and again.cached_tokens == first.prompt_tokens - 1
    assert again.logprobs == pytest.approx(first.logprobs, abs=1e-4)
    request = dict(max_tokens=8, temperature=0.0, seed=0)
    after = tiny_engine.generate(ChatRequest(MESSAGES, session="scoring-cache", **request)).collect()
    fresh = tiny_engine.generate(ChatRequest(MESSAGES, **request)).collect()
    assert after.stats.cached_tokens > 0
    assert after.text == fresh.text  # the cache was trimmed back to the prompt


def test_bad_requests_are_errors_and_the_engine_goes_on(tiny_engine):
    for request in (ScoreRequest(MESSAGES, []), ScoreRequest(MESSAGES, ["ok", ""]), ScoreRequest([], ["x"])):
        events = list(tiny_engine.score(request))
        (error,) = [e for e in events if isinstance(e, Error)]
        assert error.exit_code == 1
    assert scored(tiny_engine, ScoreRequest(MESSAGES, ["fine"])).logprobs
