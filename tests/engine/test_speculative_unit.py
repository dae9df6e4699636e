"""Prompt lookup and the drafting rule, without a model."""

import mlx.core as mx
import numpy as np
from squish.engine.sampling import choose, top_p_filter
from squish.engine.speculative import (
    K_MAX,
    REMEASURES,
    REPROBE,
    ROW_PRIOR,
    STREAK,
    Drafter,
    PassCosts,
    PromptLookup,
    Throughput,
)


def test_lookup_takes_the_continuation_of_the_longest_latest_match():
    lookup = PromptLookup([1, 2, 3, 4, 5, 9, 2, 3, 7, 8, 1, 2, 3])
    # (1, 2, 3) last occurred at the start and went on with 4, 5; (2, 3) more recently went on with 7
    assert lookup.draft(3) == [4, 5, 9]
    lookup.extend([4, 5])
    assert lookup.draft(2) == [9, 2]
    assert PromptLookup([5, 6, 7]).draft(4) == []  # nothing repeats
    assert PromptLookup([]).draft(4) == []


def test_a_longer_agreeing_context_beats_a_later_shorter_match():
    # (3, 4, 5, 6) last went on with 8, but the six tokens before the end last went on with 7:
    # a rewritten file's "def" or line start recurs, the longer context says which one comes next
    lookup = PromptLookup([1, 2, 3, 4, 5, 6, 7, 9, 3, 4, 5, 6, 8, 1, 2, 3, 4, 5, 6])
    assert lookup.draft(2) == [7, 9]
    assert PromptLookup([9, 3, 4, 5, 6, 8, 1, 3, 4, 5, 6]).draft(1) == [8]  # only the 4-gram agrees


def test_the_context_end_is_never_its_own_match_and_a_run_repeats_its_period():
    lookup = PromptLookup([8, 8, 8, 8, 8])
    assert lookup.draft(4) == [8, 8, 8, 8]
    lookup = PromptLookup([1, 2, 1, 2, 1, 2])
    assert lookup.draft(5) == [1, 2, 1, 2, 1]


def test_single_token_matches_never_draft():
    assert PromptLookup([3, 4, 5, 3]).draft(2) == []


def test_no_drafts_until_predictions_come_true():
    drafter = Drafter()
    drafter.plain_step(0.1)
    drafter.predicted(0, 1)
    drafter.predicted(0, 1)
    assert drafter.limit() == 0  # the lookup keeps guessing wrong: drafting would cost rows for nothing
    drafter.predicted(6)
    assert drafter.limit() > 0  # the answer started copying


def test_draft_length_follows_acceptance_and_the_cost_of_a_row():
    cheap, dear = Drafter(), Drafter()
    for drafter, row_s in ((cheap, 0.005), (dear, 0.08)):
        drafter.plain_step(0.1)
        drafter.checked(4, 4, 0.1 + 4 * row_s)
        drafter.predicted(12)
    assert cheap.best() == K_MAX  # right every time and rows nearly free: the longest draft
    assert 0 < dear.best() < cheap.best()
    assert cheap.limit() == K_MAX  # the pass saved 0.38 s: enough for 16 rows of 0.005 s
    assert dear.limit() == 1  # it saved 0.08 s: one row of 0.08 s
    cheap.predicted(2, 1)
    cheap.predicted(1, 1)
    assert 0 < cheap.best() < K_MAX  # a lower rate: a shorter draft pays best
    assert cheap.drafted == 4 and cheap.accepted == 4


def test_a_dear_row_cost_carries_into_the_next_request_and_a_cheap_one_does_not():
    costs = PassCosts()
    costs.plain_step(0.1)
    costs.checked(2, 0.3)  # each extra row cost a whole step, as on MLX's stock CPU path
    assert costs.measured() is None  # two rows are too few to tell the next request
    costs.checked(2, 0.3)
    carried = costs.measured()
    assert abs(carried - 1.0) < 1e-9
    warned, fresh = Drafter(carried), Drafter()
    for drafter in (warned, fresh):
        drafter.plain_step(0.1)
        drafter.predicted(20)  # the answer copies
    assert warned.best() == 0  # it knows before any draft that rows cost a step
    assert warned.limit() == 1  # one row re-measures it: the carried reading may have been a slow pass
    warned.checked(1, 1, 0.2)  # it was right: a row costs a step
    assert warned.limit() == 0
    assert fresh.limit() > 0  # without it, a request pays for drafts to find that out
    assert PassCosts(0.1).row_cost() == ROW_PRIOR  # a cheaper cost is not carried: drafts ramp up as before
    assert PassCosts(None).row_cost() == ROW_PRIOR


def test_a_carried_row_cost_waits_for_right_predictions_and_yields_to_a_cheap_reading():
    drafter = Drafter(1.0)
    drafter.plain_step(0.1)
    drafter.predicted(STREAK - 1)
    assert drafter.limit() == 0  # no streak yet: no row spent on re-measuring
    drafter.predicted(1)
    assert drafter.limit() == 1
    drafter.checked(1, 1, 0.12)  # rows are cheap now (a reading of 1.0 was a slow pass)
    assert drafter.costs.row_cost() < 0.5 and not drafter.costs.carried()
    drafter.predicted(10)
    assert drafter.best() > 1


def test_re_measuring_a_carried_row_cost_spends_at_most_remeasures_rows_a_request():
    drafter = Drafter(1.0)
    drafter.plain_step(0.1)
    drafter.predicted(20)
    for _ in range(REMEASURES):
        assert drafter.limit() == 1
        drafter.checked(1, 1, None)  # read with nothing to time it against: not counted
    assert drafter.costs.carried() and drafter.limit() == 0


def test_rows_as_dear_as_steps_never_pay():
    drafter = Drafter()
    drafter.plain_step(0.1)
    drafter.checked(2, 2, 0.3)  # each extra row cost a whole step
    drafter.predicted(20)
    assert drafter.limit() == 0


def test_greedy_choice_is_the_argmax_of_each_row():
    logits = mx.array([[0.1, 3.0, -1.0], [2.0, 0.0, 1.0]])
    assert choose(logits, 0.0, 1.0, None).tolist() == [1, 0]


def test_a_sample_depends_only_on_its_position_key():
    logits = mx.random.normal((3, 50), key=mx.random.key(1))
    keys = mx.random.split(mx.random.key(7), 3)
    together = choose(logits, 0.8, 0.9, list(keys)).tolist()
    alone = [choose(logits[i : i + 1], 0.8, 0.9, [keys[i]]).item() for i in range(3)]
    assert together == alone


def sample_counts(logits, temperature, top_p, draws=4000):
    keys = mx.random.split(mx.random.key(0), draws)
    rows = mx.broadcast_to(logits, (draws, logits.shape[-1]))
    picks = np.array(choose(rows, temperature, top_p, list(keys)))
    return np.bincount(picks, minlength=logits.shape[-1]) / draws


def test_samples_follow_temperature_and_top_p():
    logits = mx.array([2.0, 1.0, 0.5, -1.0, -3.0])
    t = 0.7
    p = np.exp(np.array(logits) / t)
    p /= p.sum()
    assert np.abs(sample_counts(logits, t, 1.0) - p).max() < 0.025
    # top-p 0.8 over the temperature-1 probabilities keeps the smallest head holding 80% of them
    base = np.exp(np.array(logits)) / np.exp(np.array(logits)).sum()
    keep = np.cumsum(base) - base < 0.8
    q = np.where(keep, p, 0.0)
    q /= q.sum()
    counts = sample_counts(logits, t, 0.8)
    assert np.abs(counts - q).max() < 0.025 and counts[~keep].sum() == 0


def test_top_p_keeps_the_smallest_head_holding_top_p_of_the_mass():
    """mlx-lm's definition: a token stays when the tokens more likely than it hold less than top_p."""
    logits = mx.random.normal((4, 300), key=mx.random.key(3)) * 3
    logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    for top_p in (0.5, 0.9, 0.95):
        kept = np.isfinite(np.array(top_p_filter(logprobs, top_p)))
        probs = np.exp(np.array(logprobs))
        for row, keep in zip(probs, kept):
            order = np.argsort(-row)
            above = np.cumsum(row[order]) - row[order]
            assert (keep[order] == (above < top_p)).all()


def test_a_nearly_free_looking_pass_does_not_outweigh_a_long_draft_that_measured_the_rows():
    drafter = Drafter()
    drafter.plain_step(0.25)
    drafter.checked(1, 1, 0.07)  # checked right after a pipelined step: looks cheaper than a step
    drafter.checked(16, 13, 0.25 + 16 * 0.26)  # each extra row cost a whole step
    drafter.predicted(30)
    assert drafter.costs.row_cost() > 0.95 and drafter.limit() == 0



def copying(drafter: Drafter) -> None:
    drafter.plain_step(0.1)
    drafter.predicted(20)  # the lookup is right every time: the row-cost model wants long drafts


def test_drafting_turns_off_when_its_seconds_per_kept_token_are_not_below_plain_steps():
    drafter = Drafter()
    copying(drafter)
    drafter.checked(1, 0, 0.101)  # looked cheap to the row-cost model, but kept 1 token in 0.101 s
    assert drafter.costs.row_cost() < 0.5 and drafter.best() > 0
    assert drafter.limit() == 0


def test_a_draft_risks_no_more_rows_than_drafting_saved():
    drafter = Drafter()
    copying(drafter)
    assert drafter.limit() == 1  # nothing saved yet: the first draft is one token
    drafter.checked(1, 1, 0.14)  # 2 tokens in 0.14 s against 0.1 s a token: 0.06 s saved
    assert round(drafter.costs.row_cost(), 6) == 0.4  # a row costs 0.04 s
    assert drafter.limit() == 1
    drafter.checked(2, 2, 0.18)  # 3 tokens in 0.18 s: 0.18 s saved in all, 4 rows' worth
    assert drafter.limit() == 4
    drafter.checked(3, 0, 0.22)  # all rejected: 1 token in 0.22 s, and the mean no longer pays
    assert not drafter.throughput.pays() and drafter.limit() == 0


def test_a_pass_timed_with_the_plain_step_it_was_queued_behind_counts_both():
    t = Throughput()
    t.plain_step(0.1)
    t.pass_done(2, 3, 0.24)  # a step and a pass (1 draft kept, then its own token) in 0.24 s
    assert round(t.draft_s, 9) == 0.08 and t.pays()
    t.pass_done(2, 2, 0.15)  # read in less than the two steps it covers: not counted
    assert round(t.draft_s, 9) == 0.08


def test_a_pass_timed_with_the_steps_it_rode_on_can_raise_the_row_cost_but_never_lower_it():
    costs = PassCosts()
    costs.plain_step(0.2)
    costs.checked(1, 2 * 0.2 + 0.014, riding=1)  # the pair read the row as nearly free
    assert costs.row_cost() == ROW_PRIOR and costs.counted == 0
    costs.checked(1, 2 * 0.2 + 0.18, riding=1)  # read dearer than the prior: at least that dear
    assert round(costs.row_cost(), 9) == 0.9
    costs.checked(2, 0.2 + 2 * 0.04)  # a pass timed on its own lowers it
    assert costs.row_cost() < 0.9 and costs.counted == 3


def test_a_probe_after_plain_steps_turns_drafting_back_on_when_it_pays():
    drafter = Drafter()
    copying(drafter)
    drafter.checked(1, 0, 0.14)
    assert drafter.best() > 0 and drafter.limit() == 0
    for _ in range(REPROBE - 1):
        drafter.plain_step(0.1)
        assert drafter.limit() == 0
    drafter.plain_step(0.1)
    assert drafter.limit() == 1  # the probe: one drafted token
    drafter.checked(1, 1, 0.12)  # the answer copies now: 2 tokens in 0.12 s
    assert drafter.limit() == 2


def test_predictions_right_streak_times_in_a_row_probe_at_once():
    drafter = Drafter()
    copying(drafter)
    drafter.checked(1, 0, 0.14)  # off: a rewritten line the lookup did not foresee
    drafter.predicted(0, 1)
    drafter.plain_step(0.1)
    drafter.predicted(STREAK - 1)
    assert drafter.limit() == 0
    drafter.predicted(1)  # the next line copies the original again
    assert drafter.limit() == 1  # the probe, long before REPROBE plain steps
    drafter.checked(1, 1, 0.12)
    assert drafter.limit() == 2


def test_a_wrong_prediction_breaks_the_streak():
    drafter = Drafter()
    copying(drafter)
    drafter.checked(1, 0, 0.14)
    drafter.predicted(STREAK - 1, 1)
    drafter.predicted(STREAK - 1)
    assert drafter.streak == STREAK - 1 and drafter.limit() == 0


def test_a_probe_that_does_not_pay_doubles_the_wait():
    drafter = Drafter()
    copying(drafter)
    drafter.checked(1, 0, 0.14)
    for _ in range(REPROBE):
        drafter.plain_step(0.1)
    drafter.checked(1, 1, 0.25)  # rows as dear as steps: 2 tokens in 0.25 s
    t = drafter.throughput
    assert drafter.limit() == 0 and t.wait == 2 * REPROBE
    for _ in range(2 * REPROBE - 1):
        t.plain_step(0.1)
    assert not t.pays()
    t.plain_step(0.1)
    assert t.pays() and t.cap(0.05) == 1  # the probe: one drafted token


def test_drafting_waits_for_a_plain_step_to_compare_with():
    t = Throughput()
    t.pass_done(2, 3, 0.3)  # drafted before any plain step was measured
    assert not t.pays()
    t.plain_step(0.2)  # 0.1 s a token drafting against 0.2 plain
    assert t.pays()


def test_a_pass_read_faster_than_a_plain_step_is_not_counted():
    t = Throughput()
    t.plain_step(0.1)
    t.pass_done(4, 1, 0.05)  # partly ran before it was timed
    assert t.draft_s is None and t.pays()
