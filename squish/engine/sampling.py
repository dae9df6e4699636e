"""Token selection and the checks that end a generation early."""

import mlx.core as mx


def choose(logits: mx.array, temperature: float, top_p: float, keys: list | None) -> mx.array:
    """The token each row of `logits` (rows, vocab) chooses: its argmax when greedy, else a sample.

    Sampling is the Gumbel-max trick, argmax(log p / temperature + G) over the tokens top-p keeps
    (mlx-lm's top-p: the smallest set holding top_p of the mass), with the noise G of each row
    drawn from its own key: one key per position in the answer, all split from the request's
    seed. A position's token therefore depends only on the seed, the position and the model's
    logits there, whether the position is decoded alone or checked inside a draft. Checking a
    drafted token x means comparing it with this sample: it is accepted with probability p(x),
    and when it is not, the sample is distributed as p without x, renormalized: the standard
    acceptance rule for a deterministic draft, so the answer's distribution is the model's.
    """
    if temperature == 0:
        return mx.argmax(logits, axis=-1)
    logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    if 0 < top_p < 1:
        logprobs = top_p_filter(logprobs, top_p)
    noise = mx.stack([mx.random.gumbel((logits.shape[-1],), key=key) for key in keys])
    return mx.argmax(logprobs.astype(mx.float32) / temperature + noise, axis=-1)


def top_p_filter(logprobs: mx.array, top_p: float) -> mx.array:
    """mlx-lm's apply_top_p (sample_utils.py), the same operations without mx.compile: on a CPU the
    compiled one builds a kernel with g++ on its first use per top_p value (2.4 s on a 2-core
    machine, unless MLX's kernel cache already holds it)."""
    sorted_logprobs = mx.sort(logprobs, axis=-1)
    sorted_probs = mx.exp(sorted_logprobs.astype(mx.float32))
    mass_above = mx.cumsum(sorted_probs, axis=-1, reverse=True, inclusive=False)
    total_mass = mass_above[..., :1] + sorted_probs[..., :1]
    num_dropped = (mass_above >= top_p * total_mass).sum(axis=-1, keepdims=True)
    threshold = mx.take_along_axis(sorted_logprobs, num_dropped, axis=-1)
    return mx.where(logprobs < threshold, -float("inf"), logprobs)


def mask_logits(logits: mx.array, allowed) -> mx.array:
    """`logits` with the tokens that `allowed` (a numpy bool vector over the vocabulary) forbids
    set to the lowest finite value, not -inf: the engine treats non-finite logits as a broken model."""
    floor = mx.array(mx.finfo(logits.dtype).min, dtype=logits.dtype)
    return mx.where(mx.array(allowed), logits, floor)


def repeating_period(tokens: list[int], min_span: int = 48, max_period: int = 64, min_repeats: int = 3) -> int:
    """The period of a loop at the end of `tokens`, or 0 when there is none.

    A loop is the same run of `period` tokens repeated back to back over at least
    `min_span` tokens and at least `min_repeats` times: "the the the ..." or a
    whole sentence said three times over.
    """
    n = len(tokens)
    for period in range(1, max_period + 1):
        span = max(min_span, period * min_repeats)
        if span > n:
            break
        tail = tokens[n - span :]
        if all(tail[i] == tail[i + period] for i in range(span - period)):
            return period
    return 0


class StopMatcher:
    """Finds stop strings in streamed text and holds back what could be the start of one."""

    def __init__(self, stops: tuple[str, ...]):
        self.stops = tuple(s for s in stops if s)
        self.text = ""
        self.emitted = 0

    def feed(self, segment: str) -> tuple[str, bool]:
        """Add decoded text; return (text safe to emit now, whether a stop string was hit)."""
        self.text += segment
        if not self.stops:
            out = self.text[self.emitted :]
            self.emitted = len(self.text)
            return out, False
        search_from = max(0, self.emitted - max(len(s) for s in self.stops))
        hits = [i for i in (self.text.find(s, search_from) for s in self.stops) if i >= 0]
        if hits:
            end = min(hits)
            out = self.text[self.emitted : end]
            self.emitted = end
            return out, True
        safe = len(self.text)
        for stop in self.stops:
            for k in range(min(len(stop) - 1, len(self.text)), 0, -1):
                if self.text.endswith(stop[:k]):
                    safe = min(safe, len(self.text) - k)
                    break
        out = self.text[self.emitted : safe]
        self.emitted = max(self.emitted, safe)
        return out, False

    def flush(self) -> str:
        out = self.text[self.emitted :]
        self.emitted = len(self.text)
        return out
