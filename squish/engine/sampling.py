"""Token selection and the checks that end a generation early."""

import mlx.core as mx


def make_sampler(temperature: float, top_p: float):
    """A function from log-probabilities (1, vocab) to the chosen token id (1,)."""
    if temperature == 0:
        return lambda logprobs: mx.argmax(logprobs, axis=-1)
    from mlx_lm.sample_utils import make_sampler as mlx_lm_sampler

    return mlx_lm_sampler(temp=temperature, top_p=top_p if top_p < 1.0 else 0.0)


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
