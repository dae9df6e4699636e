"""The decode loop with prompt-lookup drafts, on a tiny bigram language model.

The model is real arithmetic with known probabilities: the logits after token t are row t of a
fixed table, so the distribution of every answer can be computed exactly. It writes to mlx-lm's
KVCache like a transformer (one key per fed token), so the loop's trimming is the real one.
The detokenizer spells token t as one letter. Everything else (the loop, lookup, drafter,
sampling, stop strings, guards, processors) is squish's own code.
"""

import itertools
import string

import mlx.core as mx
import numpy as np
import pytest
from mlx_lm.models.cache import KVCache

from squish.engine.engine import ChatRequest, Session
from squish.engine.events import EventStream, Token
from squish.engine.generate import Decoder

VOCAB = 6
EOS = 5


class Bigram:
    """logits(next | previous token) = table[previous]; counts its passes and rows."""

    def __init__(self, table: np.ndarray, nan_after: int | None = None):
        self.table = mx.array(table.astype(np.float32))
        self.nan_after = nan_after  # logits turn NaN once the cache holds this many tokens
        self.passes = 0
        self.rows = 0
        self.now = 0.0  # the decoder's clock: a pass costs a step, and each extra row a tenth

    def clock(self) -> float:
        return self.now

    def __call__(self, inputs, cache):
        tokens = inputs[0]
        self.passes += 1
        self.rows += tokens.shape[0]
        self.now += 1.0 + 0.1 * (tokens.shape[0] - 1)
        start = cache[0].offset
        kv = mx.zeros((1, 1, tokens.shape[0], 1))
        cache[0].update_and_fetch(kv, kv)
        logits = self.table[tokens]
        if self.nan_after is not None:
            positions = mx.arange(start, start + tokens.shape[0])[:, None]
            logits = mx.where(positions >= self.nan_after, mx.array(float("nan")), logits)
        return logits[None]


class Letters:
    def __init__(self):
        self.text, self.last_segment = "", ""

    def add_token(self, token):
        self.last_segment = string.ascii_lowercase[token]
        self.text += self.last_segment

    def finalize(self):
        self.last_segment = ""


class Tokenizer:
    eos_token_ids = [EOS]

    @property
    def detokenizer(self):
        return Letters()


def cycle_table(p_next: float) -> np.ndarray:
    """0 -> 1 -> 2 -> 3 -> 0 with probability p_next each, the rest spread over the other tokens."""
    table = np.full((VOCAB, VOCAB), (1 - p_next) / (VOCAB - 1))
    for t in range(VOCAB):
        table[t, (t + 1) % 4] = p_next
    return np.log(table)


PROMPT = [0, 1, 2, 3] * 6 + [0, 1]


def decode(
    model,
    prompt=PROMPT,
    draft=True,
    max_tokens=24,
    temperature=0.0,
    seed=0,
    stop=(),
    processors=(),
    cancel_at=None,
    timeout_at=None,
    extra_cache=(),
    row_cost=None,
):
    request = ChatRequest(
        [{"role": "user", "content": "x"}],
        max_tokens=max_tokens,
        temperature=temperature,
        seed=seed,
        stop=stop,
        logits_processors=list(processors),
    )
    stream = EventStream()
    session = Session([KVCache(), *extra_cache], [])
    if cancel_at is not None:

        def cancel(tokens, logits):
            if tokens.size >= len(prompt) + cancel_at:
                stream.cancel()
            return logits

        request.logits_processors.append(cancel)
    decoders = []
    if timeout_at is not None:

        def expire(tokens, logits):
            if tokens.size >= len(prompt) + timeout_at:
                decoders[0].deadline = float("-inf")  # the request's time is up from here on
            return logits

        request.logits_processors.append(expire)
    decoder = Decoder(model, Tokenizer(), request, stream, session, float("inf"), draft, row_cost=row_cost)
    decoder.clock = getattr(model, "clock", Decoder.clock)
    decoders.append(decoder)
    outcome = decoder.run(list(prompt), max_tokens, seed)
    mx.eval([c.state for c in session.cache])
    events = []
    while True:
        try:
            events.append(stream.get(timeout=0))
        except Exception:
            break
    text = "".join(e.text for e in events if isinstance(e, Token))
    assert session.cache[0].offset == len(session.tokens)  # the cache holds exactly what the loop says
    return outcome, decoder.generated, text, session.tokens


def test_greedy_drafts_change_no_token_and_save_passes():
    plain_model, draft_model = Bigram(cycle_table(0.9)), Bigram(cycle_table(0.9))
    plain = decode(plain_model, draft=False, max_tokens=40)
    drafted = decode(draft_model, draft=True, max_tokens=40)
    assert drafted[1] == plain[1] and drafted[2] == plain[2] and drafted[3] == plain[3]
    assert drafted[0].accepted > 10 and drafted[0].drafted >= drafted[0].accepted
    assert draft_model.passes < plain_model.passes


@pytest.mark.parametrize("max_tokens", [1, 2, 3, 7, 16])
def test_max_tokens_holds_inside_an_accepted_run(max_tokens):
    plain = decode(Bigram(cycle_table(0.9)), draft=False, max_tokens=max_tokens)
    drafted = decode(Bigram(cycle_table(0.9)), max_tokens=max_tokens)
    assert len(drafted[1]) == len(plain[1]) == max_tokens
    assert drafted[1:] == plain[1:] and drafted[0].finish == "length"


def test_eos_inside_an_accepted_run_ends_the_answer_where_plain_decoding_does():
    table = cycle_table(0.9)
    table[3] = np.log(np.eye(VOCAB)[EOS] * 0.9 + 0.02)  # after "d" comes the end, greedily
    prompt = [0, 1, 2, 4, 0, 1, 2, 4, 0, 1, 2, 4, 0]  # the prompt itself never shows an end
    plain = decode(Bigram(table), prompt=prompt, draft=False)
    drafted = decode(Bigram(table), prompt=prompt)
    assert plain[0].finish == drafted[0].finish == "stop"
    assert drafted[1:] == plain[1:]


def test_a_stop_string_inside_an_accepted_run():
    plain = decode(Bigram(cycle_table(0.9)), draft=False, max_tokens=40, stop=("dabcdab",))
    drafted = decode(Bigram(cycle_table(0.9)), max_tokens=40, stop=("dabcdab",))
    assert plain[0].finish == drafted[0].finish == "stop"
    assert drafted[2] == plain[2] and "dabcdab" not in drafted[2]
    assert drafted[3] == plain[3]


def test_the_repetition_guard_stops_at_the_same_token():
    plain = decode(Bigram(cycle_table(0.9)), draft=False, max_tokens=200)
    drafted = decode(Bigram(cycle_table(0.9)), max_tokens=200)
    assert plain[0].finish == drafted[0].finish == "repetition"
    assert drafted[1:] == plain[1:] and drafted[0].accepted > 0


def test_nan_logits_inside_a_draft_end_the_answer_at_the_same_token():
    plain = decode(Bigram(cycle_table(0.9), nan_after=len(PROMPT) + 9), draft=False)
    drafted = decode(Bigram(cycle_table(0.9), nan_after=len(PROMPT) + 9))
    assert plain[0].finish == drafted[0].finish == "nan"
    assert drafted[1] == plain[1] and len(drafted[1]) == 10  # tokens chosen before the first NaN row


def test_cancel_takes_effect_within_one_pass():
    plain = decode(Bigram(cycle_table(0.9)), draft=False, max_tokens=200)
    drafted = decode(Bigram(cycle_table(0.9)), max_tokens=200, cancel_at=12)
    assert drafted[0].finish == "cancelled"
    assert len(drafted[1]) <= 12 + 16  # at most one draft's worth past the cancel
    assert drafted[1] == plain[1][: len(drafted[1])]


def test_a_time_out_inside_a_run_of_drafts_keeps_a_prefix_of_the_plain_answer():
    # The clock runs out once the processors are shown 15 answer tokens (in a draft's rows, or in a
    # plain step's); the answer ends at the next token read, and the cache holds what the loop
    # says (decode asserts it). A plain step's history holds the token still being read, so that
    # answer has 15 tokens; a pass after a checked draft shows 15 already read, and its first
    # token is the 16th. Which one happens depends on the drafter's timing.
    plain = decode(Bigram(cycle_table(0.9)), draft=False, max_tokens=200)
    drafted = decode(Bigram(cycle_table(0.9)), max_tokens=200, timeout_at=15)
    assert drafted[0].finish == "timeout" and drafted[0].accepted > 0
    assert 0 < len(drafted[1]) <= 16 and drafted[1] == plain[1][: len(drafted[1])]


def test_a_deadline_already_past_stops_before_the_first_token():
    model = Bigram(cycle_table(0.9))
    request = ChatRequest([{"role": "user", "content": "x"}], max_tokens=8, temperature=0.0)
    session = Session([KVCache()], [])
    decoder = Decoder(model, Tokenizer(), request, EventStream(), session, float("-inf"), draft=True)
    outcome = decoder.run(list(PROMPT), 8, 0)
    assert outcome.finish == "timeout" and outcome.generated == 0 and model.passes == 0


def test_processors_see_exactly_what_plain_decoding_shows_them():
    class Recorder:
        """Stateful, like a grammar matcher: bans token 2 after every third call."""

        def __init__(self):
            self.seen = []

        def __call__(self, tokens, logits):
            self.seen.append(tuple(tokens.tolist()))
            if len(self.seen) % 3 == 0:
                logits = mx.where(mx.arange(VOCAB) == 2, mx.array(-1e9), logits)
            return logits

    plain_rec, draft_rec = Recorder(), Recorder()
    plain = decode(Bigram(cycle_table(0.9)), draft=False, max_tokens=30, processors=[plain_rec])
    drafted = decode(Bigram(cycle_table(0.9)), max_tokens=30, processors=[draft_rec])
    assert drafted[1:] == plain[1:]
    assert draft_rec.seen == plain_rec.seen  # same histories, same order, none for rejected drafts
    assert drafted[0].accepted > 0


class Forcing:
    """A processor that claims tokens are forced after each token (as a grammar does) without
    masking anything: `rule(token)` says what it claims; asked with None, after the last token
    it was shown."""

    def __init__(self, rule):
        self.rule, self.asked, self.last = rule, 0, None

    def __call__(self, tokens, logits):
        self.last = int(tokens[-1].item())
        return logits

    def forced_after(self, token=None):
        self.asked += 1
        return self.rule(self.last if token is None else token)


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_forced_drafts_hold_when_right_and_change_nothing_when_wrong(temperature):
    # The model copies nothing here (drafting from the lookup stays off); the cycle's next three
    # tokens are "forced": right at p 0.9, they are kept; claimed wrong, every one is rejected.
    prompt = [4, 3, 1, 0, 2]
    plain = decode(Bigram(cycle_table(0.9)), prompt=prompt, draft=False, max_tokens=30, temperature=temperature)
    right = Forcing(lambda t: [(t + i) % 4 for i in (1, 2, 3)] if t < 4 else [])
    wrong = Forcing(lambda t: [5, 5])
    kept = decode(Bigram(cycle_table(0.9)), prompt=prompt, max_tokens=30, temperature=temperature, processors=[right])
    lost = decode(Bigram(cycle_table(0.9)), prompt=prompt, max_tokens=30, temperature=temperature, processors=[wrong])
    assert kept[1:] == plain[1:] and lost[1:] == plain[1:]
    assert kept[0].accepted > 10 and right.asked > 0
    assert lost[0].accepted == 0 and lost[0].drafted > 0
    never = Forcing(lambda t: [1])
    plain_off = decode(Bigram(cycle_table(0.9)), prompt=prompt, draft=False, max_tokens=30, processors=[never])
    assert plain_off[0].drafted == 0  # a request without drafts never asks


def test_a_dear_row_cost_carried_from_the_last_request_is_re_measured_and_gives_way_to_cheap_rows():
    plain = decode(Bigram(cycle_table(0.9)), draft=False, max_tokens=40)
    carried = decode(Bigram(cycle_table(0.9)), max_tokens=40, row_cost=1.0)  # this model's rows cost 0.1
    assert carried[1] == plain[1]  # the same answer
    assert carried[0].drafted > 10 and carried[0].accepted > 10  # a one-row draft measured the rows cheap
    assert decode(Bigram(cycle_table(0.9)), max_tokens=40, row_cost=0.1)[0].drafted > 10  # cheap: as without


def test_drafting_stays_off_when_the_answer_copies_nothing():
    model = Bigram(cycle_table(0.9))
    prompt = [4, 3, 1, 0, 2]
    drafted = decode(model, prompt=prompt, max_tokens=6)
    # after the prefill pass (all but the last prompt token), one row a pass: plain decoding
    assert drafted[0].drafted == 0 and model.rows - (len(prompt) - 1) == model.passes - 1


def test_no_drafts_with_a_cache_that_cannot_be_trimmed():
    from mlx_lm.models.cache import ArraysCache

    plain = decode(Bigram(cycle_table(0.9)), draft=False, max_tokens=30)
    drafted = decode(Bigram(cycle_table(0.9)), max_tokens=30, extra_cache=[ArraysCache(1)])
    assert drafted[0].drafted == 0 and drafted[1] == plain[1]


def exact_marginals(table: np.ndarray, last: int, steps: int) -> list[np.ndarray]:
    """P(token at answer position i) for i < steps, ignoring EOS (the table never ends early)."""
    probs = np.exp(table) / np.exp(table).sum(axis=1, keepdims=True)
    state = np.eye(VOCAB)[last]
    out = []
    for _ in range(steps):
        state = state @ probs
        out.append(state)
    return out


def test_sampling_with_drafts_keeps_the_model_s_distribution():
    """Seeds 0..N-1, temperature 1: answers with drafts equal plain ones seed for seed, and the
    tokens at each position follow the model's exact marginals."""
    table = cycle_table(0.75)
    table[:, EOS] = -30.0  # no early ends: the marginals stay simple
    runs, steps = 600, 6
    counts = np.zeros((steps, VOCAB))
    accepted = drafted = 0
    pairs = {}
    for seed in range(runs):
        out, tokens, _, _ = decode(Bigram(table), max_tokens=steps, temperature=1.0, seed=seed)
        accepted, drafted = accepted + out.accepted, drafted + out.drafted
        for i, t in enumerate(tokens):
            counts[i, t] += 1
        pairs[tuple(tokens[:2])] = pairs.get(tuple(tokens[:2]), 0) + 1
        if seed % 50 == 0:
            plain = decode(Bigram(table), draft=False, max_tokens=steps, temperature=1.0, seed=seed)
            assert plain[1] == tokens
    assert accepted > 100 and drafted - accepted > 20  # drafts were accepted and rejected
    for observed, expected in zip(counts / runs, exact_marginals(table, PROMPT[-1], steps)):
        assert 0.5 * np.abs(observed - expected).sum() < 0.07
    probs = np.exp(table) / np.exp(table).sum(axis=1, keepdims=True)
    for a, b in itertools.product(range(4), range(4)):
        expected = probs[PROMPT[-1], a] * probs[a, b]
        assert abs(pairs.get((a, b), 0) / runs - expected) < 0.06
