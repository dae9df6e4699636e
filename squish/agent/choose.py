"""Choosing the tool before the call is written: a short routing step, for small models.

A 135M model writes valid calls under the grammar, but left to itself it names the tool of
the prompt's example, or the first one listed; asked "which tool?" directly it still picks
the first one, and it never says "none". The router asks the question the other way round
(a noisy-channel classifier): for each tool, and for "no tool", how likely is the user's
request after that tool's name and one-line description? It sees only those, not the schemas,
and compares whole requests, not first tokens:

    score(tool) = log P("Tool: <name>: <description>\nUser: <request>")
                - log P("Tool: <name>: <description>\nUser:")

The second term depends on the tool alone and is computed once per tool list. Then every word
the request shares with a tool's name or description (after light stemming) adds WORD_WEIGHT
to that tool. The call is constrained to the chosen tool; "none" means no call.
"""

import re
from dataclasses import dataclass

NONE = "none"
WORD_WEIGHT = 2.0  # log-probability units per word the request shares with a tool
MODES = ("off", "model", "words", "both")
NONE_DESCRIPTION = "No tool: the assistant answers by itself (facts, math, small talk, writing)"
STOPWORDS = set(
    """a an the of in on at to for from by with and or is are was be it its this that these those
    what which who how me my i you your please can could would will do does did some any all
    there here into out up as so if then than just now get""".split()
)

_bases: dict[tuple, tuple[float, ...]] = {}  # (model, candidates) -> the scores without a request


def stem(word: str) -> str:
    for suffix in ("ing", "ies", "es", "ed", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)] + ("y" if suffix == "ies" else "")
    return word


def words(text: str) -> set[str]:
    return {stem(w) for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in STOPWORDS and len(w) > 1}


def summary(text: str) -> str:
    """A tool description's first sentence, for a short listing."""
    text = " ".join(text.split())
    first = re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0]
    return first[:120]


@dataclass(frozen=True)
class Choice:
    name: str | None  # the tool, or None for "no tool needed"
    ranking: tuple[tuple[str, float], ...]  # every candidate with its final score, best first
    mode: str

    @property
    def runner_up(self) -> str | None:
        names = [n for n, _ in self.ranking if n != (self.name or NONE)]
        return None if not names or names[0] == NONE else names[0]


class Router:
    def __init__(self, engine, tools, session: str | None = None, allow_none: bool = True):
        self.engine = engine
        self.tools = list(tools)
        self.session = session
        self.names = [t.name for t in self.tools] + ([NONE] if allow_none else [])
        self.heads = [f"Tool: {t.name}: {summary(t.description) or t.name}\nUser:" for t in self.tools]
        if allow_none:
            self.heads.append(f"Tool: {NONE_DESCRIPTION}\nUser:")
        self.vocabulary = [words(t.name.replace("_", " ") + " " + t.description) for t in self.tools]

    MESSAGES = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Describe a tool, then a request that needs it."},
    ]

    def _score(self, continuations: list[str]):
        from squish.engine.events import Error
        from squish.engine.scoring import ScoreRequest, Scores

        stream = self.engine.score(ScoreRequest(list(self.MESSAGES), continuations, session=self.session))
        scores = error = None
        for event in stream:
            if isinstance(event, Scores):
                scores = event
            elif isinstance(event, Error):
                error = event.message
        if scores is None:
            raise RuntimeError(error or "the model gave no scores")
        return scores

    def model_scores(self, request: str) -> list[float]:
        """log P(request | each candidate's description), one forward pass per candidate."""
        request = " ".join(request.split())
        scores = self._score([f"{head} {request}" for head in self.heads])
        key = (scores.model, tuple(self.heads))
        base = _bases.get(key)
        if base is None:
            base = _bases[key] = self._score(list(self.heads)).logprobs
        return [value - alone for value, alone in zip(scores.logprobs, base)]

    def word_scores(self, request: str) -> list[float]:
        asked = words(request)
        shared = [len(asked & vocabulary) for vocabulary in self.vocabulary]
        return [WORD_WEIGHT * n for n in shared] + ([0.0] if len(self.names) > len(self.tools) else [])

    def choose(self, request: str, mode: str = "both") -> Choice:
        if mode not in MODES or mode == "off":
            raise ValueError(f"routing mode must be one of {MODES[1:]}")
        totals = [0.0] * len(self.names)
        if mode in ("model", "both"):
            totals = [a + b for a, b in zip(totals, self.model_scores(request))]
        if mode in ("words", "both"):
            totals = [a + b for a, b in zip(totals, self.word_scores(request))]
        ranking = tuple(sorted(zip(self.names, totals), key=lambda item: -item[1]))
        best = ranking[0][0]
        if mode == "words" and ranking[0][1] == 0:
            best = NONE if NONE in self.names else best  # no word in common with any tool
        return Choice(None if best == NONE else best, ranking, mode)
