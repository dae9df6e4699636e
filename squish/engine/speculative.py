"""Prompt-lookup drafts for the decode loop, and the rule that decides how many to draft.

No MLX here: `PromptLookup` finds the next tokens by matching the context's last n tokens against
an earlier place in the context (the prompt and the answer so far); `Drafter` chooses the draft
length from what earlier drafts earned and what rows cost (`PassCosts`), and turns drafting off
while it does not pay. The decode loop (squish/engine/generate.py) checks drafts in one forward
pass; docs/speculative.md has the whole design.
"""

NGRAMS = (4, 3, 2)  # match lengths, longest first
K_MAX = 16  # drafted tokens in one pass at most
DECAY = 0.85  # weight of the older prediction outcomes at each new one (~7 recent ones count)
PRIOR = (1.0, 1.0)  # pseudo-counts of hits and misses before any outcome is seen
ROW_PRIOR = 0.5  # an extra row's cost in plain steps, until a checked pass measures it
EMA = 0.3  # weight of the newest time measurement
MARGIN = 1.05  # drafts must promise this speed-up over plain decoding


class PromptLookup:
    """The latest earlier occurrence of the context's last n tokens, for n in NGRAMS.

    `seen[n]` maps each n-gram to where its most recent continuation starts. An n-gram is
    registered once the token after it exists, so the context's own suffix is never its own match.
    """

    def __init__(self, tokens: list[int]):
        self.tokens: list[int] = []
        self.seen: dict[int, dict[tuple, int]] = {n: {} for n in NGRAMS}
        self.extend(tokens)

    def append(self, token: int) -> None:
        end = len(self.tokens)
        self.tokens.append(token)
        for n, seen in self.seen.items():
            if end >= n:
                seen[tuple(self.tokens[end - n : end])] = end

    def extend(self, tokens: list[int]) -> None:
        for token in tokens:
            self.append(token)

    def draft(self, limit: int) -> list[int]:
        """`limit` tokens that followed the longest earlier match of the context's end.

        A match close to the end (a run of spaces, a repeated line) continues into the context's
        own end; the draft then repeats the period the match implies.
        """
        tokens = self.tokens
        for n in NGRAMS:
            if len(tokens) < n:
                continue
            start = self.seen[n].get(tuple(tokens[-n:]))
            if start is not None:
                period = len(tokens) - start
                out = tokens[start : start + limit]
                while len(out) < limit:
                    out.append(out[len(out) - period])
                return out
        return []


class PassCosts:
    """What one plain decode step and one extra row of a pass cost, measured during one request.

    Each request measures afresh (the machine's load changes; a cost learned once and kept would
    switch drafting off for good after one noisy reading). A pass is timed from the read before
    it, so a pass checked right after a pipelined step can look cheaper than it was (part of it
    ran before the timing began): one read in less than a plain step is not counted, and row
    costs are averaged over rows, not passes, so a short draft cannot outweigh a long one that
    measured the rows' real cost.
    """

    def __init__(self) -> None:
        self.step_s: float | None = None  # running mean of one plain decode step
        self.extra_s = 0.0  # decayed sum of the seconds checked passes took beyond a step
        self.rows = 0.0  # decayed sum of the drafted rows those passes fed

    def row_cost(self) -> float:
        """An extra row's cost in plain steps."""
        if not self.rows or not self.step_s:
            return ROW_PRIOR
        return self.extra_s / self.rows / self.step_s

    def plain_step(self, seconds: float) -> None:
        """One pipelined plain step (one row) took `seconds`."""
        self.step_s = seconds if self.step_s is None else (1 - EMA) * self.step_s + EMA * seconds

    def checked(self, drafted: int, seconds: float) -> None:
        """A pass that fed `drafted` rows after its head took `seconds`."""
        if self.step_s is None or not drafted or seconds < self.step_s:
            return  # a pass of more rows than a step, read in less time, partly ran before it was timed
        self.extra_s = (1 - EMA) * self.extra_s + seconds - self.step_s
        self.rows = (1 - EMA) * self.rows + drafted


class Drafter:
    """How many tokens to draft next: as many as maximize the expected speed, or none.

    A draft of k tokens costs one pass of k + 1 rows: one plain step plus k extra rows, each
    measured (PassCosts: the cost of a row differs tenfold between MLX's stock CPU path, where
    every row streams the weights again, and kernels or GPUs where a few rows cost about one).
    It yields the tokens accepted plus one; with each drafted token right with probability a
    (until the first wrong one), that is (1 - a^(k+1)) / (1 - a) tokens. `a` is the recent rate
    of right predictions: the lookup's prediction is checked at every step it makes one, drafted
    or not (a prediction not drafted costs nothing to check), so drafting starts when the answer
    starts copying and stops when it stops, with no probing. k is the best such length when it
    promises at least MARGIN over plain decoding, else 0.
    """

    def __init__(self) -> None:
        self.hits, self.misses = PRIOR
        self.costs = PassCosts()
        self.drafted = 0  # tokens fed to the model as drafts
        self.accepted = 0  # of those, tokens the model agreed with

    def rate(self) -> float:
        return self.hits / (self.hits + self.misses)

    def limit(self) -> int:
        a = self.rate()
        row = self.costs.row_cost()
        best_k, best = 0, MARGIN
        for k in range(1, K_MAX + 1):
            tokens = (1 - a ** (k + 1)) / (1 - a) if a < 1 else k + 1.0
            speedup = tokens / (1 + row * k)
            if speedup > best:
                best_k, best = k, speedup
        return best_k

    def predicted(self, right: int, wrong: int = 0) -> None:
        """Outcomes of predictions: `right` tokens in a row as predicted, then `wrong` (0 or 1) not."""
        for outcome in [True] * right + [False] * wrong:
            self.hits, self.misses = DECAY * self.hits + outcome, DECAY * self.misses + (not outcome)

    def plain_step(self, seconds: float) -> None:
        self.costs.plain_step(seconds)

    def checked(self, drafted: int, accepted: int, seconds: float) -> None:
        """A pass that fed `drafted` drafts after its head took `seconds` and kept `accepted`."""
        self.drafted += drafted
        self.accepted += accepted
        self.costs.checked(drafted, seconds)
