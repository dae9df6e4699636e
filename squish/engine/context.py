"""Fitting a conversation into the context window: the oldest turns are left out first.

A request's prompt must leave room for the answer. When the whole conversation does not fit,
whole turns (a user message and the replies after it) are left out from the oldest on; the
system prompt and the last turn never are, and the exchange before the last turn stays while
that is enough. To keep the KV cache useful, a conversation that overflows is cut back to
`LOW_WATER` of the budget, and the next requests keep that cut while they fit, so the prompt's
prefix (and the cache) stays the same for several turns instead of changing on every one.
Nothing here touches the caller's messages or the saved history. No MLX here: `render` is the
tokenizer's chat template, called on the engine thread.
"""

from dataclasses import dataclass
from typing import Callable

from ..errors import UserError

LOW_WATER = 0.75
MIN_ANSWER_ROOM = 16


@dataclass(frozen=True)
class Fitted:
    tokens: list[int]
    left_out: int  # messages after the system prompt that were left out


def answer_room(context_size: int, max_tokens: int) -> int:
    """Tokens kept free for the answer: max_tokens, but at most a quarter of the window."""
    return max(min(max_tokens, context_size // 4), min(MIN_ANSWER_ROOM, context_size // 2))


def fit(
    render: Callable[[list[dict]], list[int]],
    messages: list[dict],
    context_size: int,
    max_tokens: int,
    previous: int = 0,
) -> Fitted:
    """The prompt tokens for `messages` within `context_size` with room for the answer.

    `previous` is the number of messages the last request of this conversation left out."""
    budget = context_size - answer_room(context_size, max_tokens)
    tokens = render(messages)
    if len(tokens) <= budget:
        return Fitted(tokens, 0)
    head = messages[:1] if messages[0]["role"] == "system" else []
    body = messages[len(head) :]
    users = [i for i, message in enumerate(body) if message["role"] == "user"]
    last = users[-1] if users else 0
    cuts = [i for i in users if 0 < i <= last]  # leaving out body[:i] keeps whole turns
    if not cuts:
        return _within_window(tokens, context_size)
    lengths: dict[int, list[int]] = {}

    def rendered(cut: int) -> list[int]:
        if cut not in lengths:
            lengths[cut] = render(head + body[cut:])
        return lengths[cut]

    # Lengths shrink as more is left out: binary search for the first cut under a limit.
    def first_under(limit: int, lo: int, hi: int) -> int:
        while lo < hi:
            mid = (lo + hi) // 2
            if len(rendered(cuts[mid])) <= limit:
                hi = mid
            else:
                lo = mid + 1
        return lo

    if previous in cuts and len(rendered(previous)) <= budget:
        return Fitted(rendered(previous), previous)
    least = first_under(budget, 0, len(cuts))
    if least == len(cuts):  # even the last turn alone is over the budget: give it what is left
        return Fitted(_within_window(rendered(cuts[-1]), context_size).tokens, cuts[-1])
    keep_exchange = max(least, len(cuts) - 2)  # the cut that still keeps the exchange before the last turn
    chosen = first_under(int(budget * LOW_WATER), least, keep_exchange)
    cut = cuts[min(chosen, keep_exchange)]
    return Fitted(rendered(cut), cut)


def _within_window(tokens: list[int], context_size: int) -> Fitted:
    if len(tokens) >= context_size:
        raise UserError(f"the prompt is {len(tokens)} tokens; the context window is {context_size}")
    return Fitted(tokens, 0)
