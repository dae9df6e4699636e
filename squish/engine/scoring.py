"""Scoring continuations: how likely the model finds each of a few texts after a prompt.

The agent uses it to choose among tool names (and "no tool") by the likelihood of each whole
name, rather than by the first token a constrained decode happens to take. The prompt is the
chat template of the messages, plus an assistant `prefix` (e.g. `<tool_call>[{"name": "`);
each continuation's score is the sum of its tokens' log-probabilities. The prompt goes
through the session's KV cache like a generation's, so a generation that follows with the
same messages prefills nothing again; each continuation costs one forward pass over its own
tokens, after which the cache is trimmed back.
"""

from dataclasses import dataclass, field


@dataclass
class ScoreRequest:
    messages: list[dict]
    continuations: list[str]
    prefix: str = ""  # assistant text before each continuation
    session: str | None = None
    template_args: dict = field(default_factory=dict)
    timeout_s: float | None = 120.0


@dataclass(frozen=True)
class Scores:
    logprobs: tuple[float, ...]  # per continuation: the sum over its tokens
    tokens: tuple[int, ...]  # per continuation: how many tokens it took
    prompt_tokens: int
    cached_tokens: int
    elapsed_ms: float
    model: str  # the loaded model's name: scores of different models do not compare


def score(engine, request: ScoreRequest, stream, session) -> None:
    """The "score" request, on the engine thread: `engine` is the Engine (its model and session
    pool), which has checked the messages and found the request's `session`."""
    import time

    import mlx.core as mx
    from mlx_lm.models.cache import trim_prompt_cache

    from ..errors import UserError

    started = time.perf_counter()
    if not request.continuations or not all(isinstance(c, str) and c for c in request.continuations):
        raise UserError("scoring needs at least one non-empty continuation")
    model, tokenizer, info = engine._model, engine._tokenizer, engine._info
    prompt = list(tokenizer.apply_chat_template(request.messages, add_generation_prompt=True, **request.template_args))
    options = [tokenizer.encode(request.prefix + c, add_special_tokens=False) for c in request.continuations]
    shared = 0  # leading tokens every option has in common: part of the prompt for the cache
    while all(len(o) > shared + 1 for o in options) and len({o[shared] for o in options}) == 1:
        shared += 1
    tokens = prompt + options[0][:shared]
    longest = max(len(o) for o in options) - shared
    if len(tokens) + longest >= info.context_length:
        raise UserError(f"the prompt is {len(tokens)} tokens; the context window is {info.context_length}")
    deadline = stream.submitted_at + request.timeout_s if request.timeout_s else float("inf")

    session, cached = engine._session(request.session, tokens, session)
    cache = session.cache
    new = tokens[cached:]
    logits = None
    for start in range(0, len(new), 256):
        if stream.cancelled or time.perf_counter() > deadline:
            raise UserError("the scoring request was cancelled or timed out")
        chunk = new[start : start + 256]
        logits = model(mx.array(chunk)[None], cache=cache)
        session.tokens.extend(chunk)
    last = logits[0, -1].astype(mx.float32)
    first = last - mx.logsumexp(last)
    totals, counts = [], []
    for option in options:
        rest = option[shared:]
        value = first[rest[0]]
        if len(rest) > 1:
            out = model(mx.array(rest[:-1])[None], cache=cache)[0].astype(mx.float32)
            steps = out - mx.logsumexp(out, axis=-1, keepdims=True)
            value = value + mx.take_along_axis(steps, mx.array(rest[1:])[:, None], axis=-1).sum()
            mx.eval(value)
            trim_prompt_cache(cache, len(rest) - 1)
        totals.append(value)
        counts.append(len(rest))
    values = mx.stack(totals).tolist()
    stream.put(
        Scores(tuple(values), tuple(counts), len(tokens), cached, (time.perf_counter() - started) * 1000, info.name)
    )
