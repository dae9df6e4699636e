"""Prefill and the decode loop of one request, with prompt-lookup drafts checked in one pass.

Runs on the engine thread (squish/engine/engine.py hands it the model, the session's KV cache
and the request). Plain decoding is pipelined as in mlx-lm: the graph of the next step is built
while the current one computes. A draft (squish/engine/speculative.py) rides on that pipeline:
the pass after a plain step feeds the step's token, still being computed, followed by the
tokens that came after the same context earlier, on the guess that the step's token is the
first token of that earlier continuation. When the guess holds, the pass checked the draft at
the cost of one pass; when it does not, the pass served as the plain step and the drafts' keys
and values are trimmed from the cache. docs/speculative.md has the whole design.
"""

import time
from dataclasses import dataclass

import mlx.core as mx

from .events import Live, Progress, Thinking, Token
from .memory import mlx_memory_gb
from .sampling import StopMatcher, choose, repeating_period
from .speculative import Drafter, PromptLookup

PREFILL_CHUNK = 256
LIVE_INTERVAL_S = 0.25


class Stop(Exception):
    def __init__(self, reason: str):
        self.reason = reason


@dataclass
class Outcome:
    finish: str
    generated: int
    t_start: float  # before prefill
    t_first: float  # first token read
    t_last: float  # last token read
    drafted: int
    accepted: int
    thinking_tokens: int  # of the generated tokens, those inside the <think> block
    thinking_until: float  # when the think block ended (its last token)


@dataclass
class Pass:
    """One forward pass: it feeds `head` then `drafts`; row i of its logits chooses the token after
    input i. `guess` is what the lookup expected a head still being computed to be: the drafts
    follow it. `wasted` counts drafts fed and then dropped because the guess was wrong."""

    head: mx.array  # (1,) uint32
    drafts: list[int]
    guess: int | None
    lazy: bool  # built before its head was read (the pipelined case)
    logits: mx.array  # (rows, vocab), as the model gave them
    choices: mx.array  # (rows,), or (1,) with processors: the token each row chose
    finite: mx.array  # same shape: whether that row's (processed) logits were finite
    history: mx.array | None  # the processors' token history up to and including head
    position: int  # index in the answer of the token row 0 chooses
    wasted: int = 0
    forced: bool = False  # the drafts are what a processor's grammar forces, not a lookup's guess


class Decoder:
    """One request's prefill and decode loop. Engine-thread only."""

    # The drafter's on/off rule and the deadline read this clock; the engine's deadlines come
    # from the same one. Structural tests give a scripted model a clock of its own, so that what
    # a pass costs, and so what drafting decides, does not depend on the machine's load.
    clock = staticmethod(time.perf_counter)

    def __init__(
        self, model, tokenizer, request, stream, session, deadline: float, draft: bool, splitter=None, row_cost=None
    ):
        self.model, self.request, self.stream, self.session = model, request, stream, session
        self.cache = session.cache
        self.deadline = deadline
        self.processors = list(request.logits_processors)
        if request.processor_factory is not None:
            self.processors += request.processor_factory(tokenizer)
        self.eos = set(tokenizer.eos_token_ids)
        self.detokenizer = tokenizer.detokenizer
        self.stops = StopMatcher(request.stop)
        self.drafting = draft
        self.drafter = Drafter(row_cost)  # row_cost: what the model's last request measured (PassCosts)
        self.lookup: PromptLookup | None = None
        self.keys = None
        self.generated: list[int] = []
        self.t_first = self.t_last = self.t_live = 0.0
        self.splitter = splitter  # thinking.ThinkSplitter for models that think, else None
        self.thinking_tokens, self.thinking_until = 0, 0.0

    # Forward passes.

    def build(
        self, head: mx.array, drafts: list[int], position: int, guess: int | None = None, lazy=False, forced=False
    ) -> Pass:
        """Queue the pass that feeds head + drafts (head may still be computing)."""
        inputs = mx.concatenate([head, mx.array(drafts, dtype=mx.uint32)]) if drafts else head
        logits = self.model(inputs[None], cache=self.cache)[0]
        history = None
        rows = logits
        if self.processors:
            # Queued before the processors run: they wait for head's token and then compute
            # their masks on this thread while the pass computes on the stream's.
            mx.async_eval(logits)
            # Rows after the first are processed once the drafts before them are accepted.
            history = self.history = mx.concatenate([self.history, head])
            rows = logits[:1]
            for processor in self.processors:
                rows = processor(history, rows)
        choices = choose(rows, self.request.temperature, self.request.top_p, self.row_keys(position, len(rows)))
        finite = mx.all(mx.isfinite(rows), axis=-1)
        mx.async_eval(choices, finite)
        return Pass(head, drafts, guess, lazy, logits, choices, finite, history, position, forced=forced)

    def row_keys(self, position: int, rows: int) -> list | None:
        """The sampling noise keys of answer positions position.. (None when greedy)."""
        if self.keys is None:
            return None
        if position + rows > self.keys.shape[0]:
            raise IndexError(f"answer position {position + rows - 1} past max_tokens {self.keys.shape[0]}")
        return [self.keys[position + i] for i in range(rows)]

    def check_rows(self, p: Pass) -> tuple[list[int], list[bool]]:
        """The tokens the model chose after head and each accepted draft, and their finiteness."""
        if not self.processors:
            mx.eval(p.choices, p.finite)
            choices, finite = p.choices.tolist(), p.finite.tolist()
            accepted = 0
            while accepted < len(p.drafts) and finite[accepted] and choices[accepted] == p.drafts[accepted]:
                accepted += 1
            return choices[: accepted + 1], finite[: accepted + 1]
        # Processors may keep state (a grammar matcher consumes each token it is shown): show them
        # row i only once the drafts before it are accepted, as plain decoding would have.
        choices, finite = [p.choices.item()], [bool(p.finite.item())]
        history = p.history
        for i, drafted in enumerate(p.drafts):
            if not finite[-1] or choices[-1] != drafted:
                break
            history = mx.concatenate([history, mx.array([drafted], dtype=mx.uint32)])
            row = p.logits[i + 1 : i + 2]
            for processor in self.processors:
                row = processor(history, row)
            token = choose(row, self.request.temperature, self.request.top_p, self.row_keys(p.position + i + 1, 1))
            ok = mx.all(mx.isfinite(row))
            mx.eval(token, ok)
            choices.append(token.item())
            finite.append(bool(ok.item()))
        return choices, finite

    def keep(self, p: Pass, accepted: int) -> None:
        """Keep head and the first `accepted` drafts of `p` in the cache; trim the rest."""
        from mlx_lm.models.cache import trim_prompt_cache

        if len(p.drafts) > accepted:
            trim_prompt_cache(self.cache, len(p.drafts) - accepted)
        kept = p.drafts[:accepted]
        self.session.tokens.extend(kept)
        if self.processors and kept:
            self.history = mx.concatenate([self.history, mx.array(kept, dtype=mx.uint32)])

    # Tokens.

    def emit(self, token: int, finite: bool) -> str | None:
        """Hand one chosen token to the caller; the finish reason when it ends the answer."""
        now = self.clock()
        if not self.generated and not self.t_first:
            self.t_first = now
            self.stream.put(Progress(self.prompt_left, self.prompt_left))
        self.t_last = now
        if not finite:
            return "nan"
        if token in self.eos:
            return "stop"
        self.generated.append(token)
        if self.lookup is not None:
            self.lookup.append(token)
        self.detokenizer.add_token(token)
        text, hit = self.stops.feed(self.detokenizer.last_segment)
        if text:
            self.say(text, token)
        if hit:
            return "stop"
        if repeating_period(self.generated):
            return "repetition"
        if len(self.generated) >= self.max_tokens:
            return "length"
        if now - self.t_live >= LIVE_INTERVAL_S:
            self.t_live = now
            self.stream.put(self.live(now))
        return self.interrupted(now)

    def say(self, text: str, token: int) -> None:
        """Stream answer text; a thinking model's <think> block goes out as Thinking events."""
        if self.splitter is None:
            self.stream.put(Token(text, token))
            return
        self.put_pieces(self.splitter.feed(text), token)
        if self.splitter.state in ("thinking", "after") and token >= 0:
            self.thinking_tokens += 1
            self.thinking_until = self.clock()

    def put_pieces(self, pieces: list[tuple[bool, str]], token: int) -> None:
        for inside, piece in pieces:
            self.stream.put(Thinking(piece, token) if inside else Token(piece, token))

    def live(self, now: float) -> Live:
        active, peak, _ = mlx_memory_gb()
        decode_s = now - self.t_first
        return Live(
            generation_tokens=len(self.generated),
            ttft_ms=(self.t_first - self.stream.submitted_at) * 1000,
            decode_tps=(len(self.generated) - 1) / decode_s if decode_s > 0 else 0.0,
            active_memory_gb=active,
            peak_memory_gb=peak,
            draft_tokens=self.drafter.drafted,
            accepted_tokens=self.drafter.accepted,
        )

    def interrupted(self, now: float) -> str | None:
        if self.stream.cancelled:
            return "cancelled"
        if now > self.deadline:
            return "timeout"
        return None

    def drafts_after(self, head: int, limit: int) -> tuple[list[int], bool]:
        """The drafts of a pass whose head is known: the tokens a processor's grammar forces after
        it (a tool call's fixed text: they hold whatever the model prefers), else the lookup's
        guess. Returns (drafts, forced)."""
        budget = self.max_tokens - len(self.generated) - 1  # tokens allowed after head
        if budget > 0 and (tokens := self.forced(head, budget)):
            return tokens, True
        return self.lookahead(min(limit, budget)), False

    def forced(self, head: int | None, limit: int) -> list[int]:
        """Up to `limit` tokens a processor's grammar forces after `head` (None: after the last
        token it was shown, for a pass whose head is still being computed)."""
        if self.lookup is None:  # drafting is off, or the cache cannot be trimmed
            return []
        for processor in self.processors:
            forced = getattr(processor, "forced_after", None)
            if forced is not None:
                return forced(head)[:limit]
        return []

    def lookahead(self, limit: int) -> list[int]:
        """Up to `limit` tokens that prompt lookup predicts after the context (the answer so far)."""
        if self.lookup is None or limit < 1:
            return []
        return self.lookup.draft(limit)

    # The request.

    def run(self, new_tokens: list[int], max_tokens: int, seed: int) -> Outcome:
        from mlx_lm.models.cache import can_trim_prompt_cache

        session = self.session
        self.max_tokens = max_tokens
        self.prompt_left = len(new_tokens)
        if self.request.temperature > 0:
            self.keys = mx.random.split(mx.random.key(seed), max_tokens)
        self.history = mx.array(session.tokens, dtype=mx.uint32) if self.processors else None
        if self.drafting and can_trim_prompt_cache(self.cache):
            self.lookup = PromptLookup(session.tokens + new_tokens)
        t_start = self.clock()
        self.t_live = t_start
        finish = "length"
        try:
            finish = self.decode(new_tokens)
        except Stop as stop:
            finish = stop.reason
            self.t_last = self.clock()
            if not self.t_first:
                self.t_first = self.t_last
        if finish in ("length", "repetition", "nan"):
            self.detokenizer.finalize()
            text, _ = self.stops.feed(self.detokenizer.last_segment)
            text += self.stops.flush()
            if text:
                self.say(text, -1)
        if self.splitter is not None:
            self.put_pieces(self.splitter.flush(), -1)
        return Outcome(
            finish,
            len(self.generated),
            t_start,
            self.t_first or self.t_last,
            self.t_last,
            self.drafter.drafted,
            self.drafter.accepted,
            self.thinking_tokens,
            self.thinking_until,
        )

    def prefill(self, new_tokens: list[int]) -> None:
        done = 0
        self.stream.put(Progress(0, len(new_tokens)))
        while len(new_tokens) - done > 1:
            if (reason := self.interrupted(self.clock())) is not None:
                raise Stop(reason)
            chunk = new_tokens[done : min(done + PREFILL_CHUNK, len(new_tokens) - 1)]
            self.session.tokens.extend(chunk)
            if self.processors:
                self.history = mx.concatenate([self.history, mx.array(chunk, dtype=mx.uint32)])
            self.model(mx.array(chunk)[None], cache=self.cache)
            mx.eval([c.state for c in self.cache])
            done += len(chunk)
            self.stream.put(Progress(done, len(new_tokens)))

    def decode(self, new_tokens: list[int]) -> str:
        """The decode loop; returns the finish reason. Keeps session.tokens equal to what the cache holds."""
        session, drafter = self.session, self.drafter
        self.prefill(new_tokens)
        head = new_tokens[-1]
        session.tokens.append(head)
        first, forced = self.drafts_after(head, drafter.limit())
        current = self.build(mx.array([head], dtype=mx.uint32), first, 0, forced=forced)
        t_read = None  # when the previous pass was read: a pass's time runs from there
        # Seconds and tokens of plain steps read while a pass with drafts was queued behind them:
        # reading such a step waits for part of that pass, so they are timed together with it.
        riding_s, riding = 0.0, 0
        while True:
            if current.drafts:
                # Drafts after a known head: read every row at once, keep what the model agrees with.
                choices, finite = self.check_rows(current)
                accepted = len(choices) - 1
                self.keep(current, accepted)
                now = self.clock()
                if current.forced:  # counted, but no evidence about the lookup or what its rows earn
                    drafter.checked(len(current.drafts), accepted, None)
                else:
                    drafter.predicted(accepted, int(accepted < len(current.drafts)))
                    seconds = now - t_read + riding_s if t_read is not None else None
                    drafter.checked(len(current.drafts), accepted, seconds, riding)
                t_read, riding_s, riding = now, 0.0, 0
                for i, (token, ok) in enumerate(zip(choices, finite)):
                    more = len(self.generated) + 1 < self.max_tokens
                    if (finish := self.emit(token, ok)) is not None:
                        if i < accepted:
                            self.unfeed(accepted - i - 1)  # accepted drafts after the last token
                        elif more:
                            # Plain decoding queues a step on every token it reads while the budget
                            # allows, so the cache ends holding the last token: so does this.
                            session.tokens.append(token)
                            self.build(mx.array([token], dtype=mx.uint32), [], len(self.generated))
                        return finish
                head = choices[-1]
                session.tokens.append(head)
                drafts, forced = self.drafts_after(head, drafter.limit())
                current = self.build(mx.array([head], dtype=mx.uint32), drafts, len(self.generated), forced=forced)
                continue
            # A plain step: queue the next pass on its token before reading that token.
            # The lookup predicts this step's token and what follows it; the prediction is checked
            # when the token is read, and the tokens after it ride on the next pass as drafts.
            # A grammar that forces this step's token and more predicts them the same way.
            nxt, prediction, forced = None, None, []
            left = self.max_tokens - len(self.generated) - 1  # tokens allowed after this one
            if left > 0:
                forced = self.forced(None, left)
                ahead = forced or self.lookahead(min(drafter.limit(), left - 1) + 1)
                prediction = ahead[0] if ahead else None
                guess = prediction if len(ahead) > 1 else None
                position = current.position + 1
                nxt = self.build(current.choices[:1], ahead[1:], position, guess, lazy=True, forced=bool(forced))
            token, ok = current.choices[:1].item(), bool(current.finite[:1].item())
            if prediction is not None and not forced:
                drafter.predicted(int(token == prediction), int(token != prediction))
            now = self.clock()
            seconds = now - t_read + riding_s if t_read is not None and current.lazy else None
            if seconds is not None and nxt is not None and nxt.drafts:
                riding_s, riding = seconds, riding + 1  # timed with the pass behind it
                if current.wasted:
                    drafter.checked(current.wasted, 0, None)
            else:
                if current.wasted:
                    drafter.checked(current.wasted, 0, seconds, riding)
                elif seconds is not None:
                    drafter.plain_step(seconds)
                riding_s, riding = 0.0, 0
            t_read = now
            if nxt is not None:
                session.tokens.append(token)
                if nxt.drafts and nxt.guess != token:
                    # The drafts followed a token the model did not choose: nxt is a plain step.
                    self.keep(nxt, 0)
                    nxt.wasted, nxt.drafts = len(nxt.drafts), []
            if (finish := self.emit(token, ok)) is not None:
                if nxt is not None and nxt.drafts:
                    self.keep(nxt, 0)
                return finish
            current = nxt

    def unfeed(self, n: int) -> None:
        """Drop the last `n` fed tokens from the cache (they came after the answer's end)."""
        from mlx_lm.models.cache import trim_prompt_cache

        if n > 0:
            trim_prompt_cache(self.cache, n)
            del self.session.tokens[-n:]
