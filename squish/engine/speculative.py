"""Prompt-lookup drafts for the decode loop, and the rule that decides how many to draft.

No MLX here: `PromptLookup` finds the next tokens by matching the context's last n tokens against
an earlier place in the context (the prompt and the answer so far); `Drafter` chooses the draft
length from what earlier drafts earned and what rows cost (`PassCosts`), and turns drafting off
while the seconds per kept token it measures for drafting passes are not below plain steps'
(`Throughput`). The decode loop (squish/engine/generate.py) checks drafts in one forward
pass; docs/speculative.md has the whole design.
"""

# Match lengths, longest first. The long ones choose among the places a short n-gram recurs (a
# line start, "def", a closing bracket) the one whose context agrees longest; with (4, 3, 2)
# alone the latest one won. On the file rewrite, three interleaved A/Bs gained 13%, 1% and 10%
# (p 0.008, 0.92, 0.058): docs/speculative.md.
NGRAMS = (12, 8, 6, 4, 3, 2)
K_MAX = 16  # drafted tokens in one pass at most
DECAY = 0.85  # weight of the older prediction outcomes at each new one (~7 recent ones count)
PRIOR = (1.0, 1.0)  # pseudo-counts of hits and misses before any outcome is seen
ROW_PRIOR = 0.5  # an extra row's cost in plain steps, until a checked pass measures it
CARRY_ROWS = 4  # rows a request must time before its row cost informs the next request's prior
EMA = 0.3  # weight of the newest time measurement
MARGIN = 1.05  # drafts must promise this speed-up over plain decoding
REPROBE = 32  # plain steps after drafting turned off before one short draft tries again
REPROBE_MAX = 512  # the wait doubles after each probe that does not pay, up to this
STREAK = 3  # right predictions in a row that make drafting, while off, try again at once
REMEASURES = 3  # one-row drafts a request may spend to re-measure a carried row cost


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

    Each request measures afresh. Until its first checked pass it assumes ROW_PRIOR, or the row
    cost the last request on this model measured (`carried`) when that is higher: on MLX's stock
    CPU path a row costs about a step, and without it every request would pay for a few drafts
    to find that out again. A lower cost is not carried (a short prior ramps drafts up before the
    acceptance rate is known, which measured worse), so a request that measured rows as dear
    lowers the next one's prior back as soon as it measures them cheap again. It measures them
    again with one-row drafts when the lookup predicts well, up to REMEASURES of them until one
    is counted (Drafter.limit): a carried cost that forbids every draft would otherwise never be
    measured again, and one slow reading (a pass the OS descheduled) would keep drafts off for
    every later request. A pass timed with the step it rode on is not counted when the two read
    faster than two steps, which a one-row draft often does, hence more than one.

    A pass is timed from the read before it, so a pass checked right after a pipelined step can
    look cheaper than it was (part of it ran before the timing began): one read in less than a
    plain step is not counted, and row costs are averaged over rows, not passes, so a short
    draft cannot outweigh a long one that measured the rows' real cost. A pass timed with the
    steps it rode on (queued behind them) reads at most what it cost, so it may raise the row
    cost but never lower it: on MLX's stock CPU path a one-row draft and its step read 0.07 of
    a step for the row, and the 9-row draft that reading allowed cost 0.65 a row.
    """

    def __init__(self, carried: float | None = None) -> None:
        self.prior = ROW_PRIOR if carried is None else max(ROW_PRIOR, carried)
        self.step_s: float | None = None  # running mean of one plain decode step
        self.extra_s = 0.0  # decayed sum of the seconds checked passes took beyond a step
        self.rows = 0.0  # decayed sum of the drafted rows those passes fed
        self.counted = 0  # rows measured in all

    def row_cost(self) -> float:
        """An extra row's cost in plain steps."""
        if not self.rows or not self.step_s:
            return self.prior
        return self.extra_s / self.rows / self.step_s

    def carried(self) -> bool:
        """Whether the row cost in force is the last request's, not yet measured in this one."""
        return not self.rows and self.prior > ROW_PRIOR

    def measured(self) -> float | None:
        """The row cost this request measured, once it timed CARRY_ROWS rows; else None."""
        return self.row_cost() if self.counted >= CARRY_ROWS else None

    def plain_step(self, seconds: float) -> None:
        """One pipelined plain step (one row) took `seconds`."""
        self.step_s = seconds if self.step_s is None else (1 - EMA) * self.step_s + EMA * seconds

    def checked(self, drafted: int, seconds: float, riding: int = 0) -> None:
        """A pass that fed `drafted` rows after its head took `seconds` (and `riding` plain steps)."""
        steps = 1 + riding
        if self.step_s is None or not drafted or seconds < steps * self.step_s:
            return  # a pass of more rows than a step, read in less time, partly ran before it was timed
        extra = seconds - steps * self.step_s
        if riding and extra / drafted / self.step_s < self.row_cost():
            return  # the steps it rode on began before the timing did: a lower bound, only raises
        self.extra_s = (1 - EMA) * self.extra_s + extra
        self.rows = (1 - EMA) * self.rows + drafted
        self.counted += drafted


class Throughput:
    """Seconds per kept token, measured in this request: plain steps against drafting passes.

    The row-cost model (PassCosts) can misjudge what a pass costs (on MLX's stock CPU path it
    reads rows as cheaper than they are; with logits processors each drafted row is read on its
    own). This is the check that does not depend on it: drafting goes on only while its passes
    kept tokens for fewer seconds each than plain steps did (running means; a pass read in
    less than the plain steps it covers partly ran before it was timed and is not counted).
    Once off, it tries again after `wait` plain steps with a one-token draft, so a later stretch
    of copying can turn it back on; a probe that does not pay doubles the wait. The Drafter
    probes sooner when the lookup's predictions come true STREAK times in a row (a copied
    stretch has begun: a rewritten file diverges from its original for a line, then copies the
    next one). `saved` is the time drafting saved so far (since the last probe): a draft may
    risk no more rows than it pays for, so a draft that fails loses at most what drafting gained.
    """

    def __init__(self) -> None:
        self.plain_s: float | None = None  # running mean of a plain step's seconds (one token)
        self.draft_s: float | None = None  # running mean of drafting passes' seconds per kept token
        self.saved = 0.0
        self.wait, self.waited = REPROBE, 0
        self.probing = False

    def pays(self) -> bool:
        if self.draft_s is None:
            return True  # not measured yet (at the start, or a probe)
        return self.plain_s is not None and self.draft_s < self.plain_s

    def cap(self, row_s: float) -> int:
        """The longest draft whose rows (`row_s` seconds each) the time saved so far pays for."""
        if row_s <= 0:
            return K_MAX
        return max(1, min(K_MAX, int(self.saved / row_s)))

    def plain_step(self, seconds: float) -> None:
        self.plain_s = seconds if self.plain_s is None else (1 - EMA) * self.plain_s + EMA * seconds
        if not self.pays():
            self.waited += 1
            if self.waited >= self.wait:
                self.probe()

    def probe(self) -> None:
        """Measure drafting afresh, from a one-token draft (`cap` grows with what it saves)."""
        self.draft_s, self.saved, self.waited, self.probing = None, 0.0, 0, True

    def pass_done(self, steps: int, kept: int, seconds: float) -> None:
        """A drafting pass, with the plain steps it was queued behind (`steps` steps' time in all
        for a plain decoder), took `seconds` and kept `kept` tokens."""
        if self.plain_s is not None and seconds < steps * self.plain_s:
            return  # partly ran before it was timed
        sample = seconds / kept
        self.draft_s = sample if self.draft_s is None else (1 - EMA) * self.draft_s + EMA * sample
        if self.plain_s is None:
            return  # nothing to compare with: pays() stays False until a plain step is measured
        self.saved += kept * self.plain_s - seconds
        if self.probing:
            self.probing = False
            self.wait = REPROBE if self.pays() else min(REPROBE_MAX, 2 * self.wait)
        self.waited = 0


class Drafter:
    """How many tokens to draft next: as many as maximize the expected speed, or none.

    A draft of k tokens costs one pass of k + 1 rows: one plain step plus k extra rows, each
    measured (PassCosts: the cost of a row differs tenfold between MLX's stock CPU path, where
    every row streams the weights again, and kernels or GPUs where a few rows cost about one).
    It yields the tokens accepted plus one; with each drafted token right with probability a
    (until the first wrong one), that is (1 - a^(k+1)) / (1 - a) tokens. `a` is the recent rate
    of right predictions: the lookup's prediction is checked at every step it makes one, drafted
    or not (a prediction not drafted costs nothing to check), so drafting starts when the answer
    starts copying and stops when it stops. k is the best such length when it promises at least
    MARGIN over plain decoding, else 0; and at most what `Throughput` measured to pay, 0 while it
    measures drafting as not paying, until STREAK right predictions in a row make it probe.
    """

    def __init__(self, carried_row_cost: float | None = None) -> None:
        self.hits, self.misses = PRIOR
        self.costs = PassCosts(carried_row_cost)
        self.throughput = Throughput()
        self.drafted = 0  # tokens fed to the model as drafts
        self.accepted = 0  # of those, tokens the model agreed with
        self.streak = 0  # the lookup's latest predictions that came true, in a row
        self.remeasures = 0  # rows drafted to re-measure the carried row cost

    def rate(self) -> float:
        return self.hits / (self.hits + self.misses)

    def limit(self) -> int:
        if not self.throughput.pays():
            return 0
        best = self.best()
        if not best and self.costs.carried() and self.remeasures < REMEASURES and self.streak >= STREAK:
            best = 1  # re-measure the carried cost with one row, or a dear reading locks drafts out for good
        step_s = self.costs.step_s or 0.0
        return min(best, self.throughput.cap(self.costs.row_cost() * step_s))

    def best(self) -> int:
        """The draft length the acceptance rate and the row-cost model promise the most speed for."""
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
        self.streak = 0 if wrong else self.streak + right
        if self.streak >= STREAK and not self.throughput.pays():
            self.throughput.probe()

    def plain_step(self, seconds: float) -> None:
        self.costs.plain_step(seconds)
        self.throughput.plain_step(seconds)

    def checked(self, drafted: int, accepted: int, seconds: float | None, riding: int = 0) -> None:
        """A pass that fed `drafted` drafts after its head took `seconds` (None: not timed) and
        kept `accepted` of them, plus the model's own token after them. `seconds` also covers
        `riding` plain steps read while the pass was queued behind them (one token each)."""
        self.drafted += drafted
        self.accepted += accepted
        self.remeasures += drafted > 0 and self.costs.carried()
        if seconds is None:
            return
        self.costs.checked(drafted, seconds, riding)
        self.throughput.pass_done(1 + riding, accepted + 1 + riding, seconds)
