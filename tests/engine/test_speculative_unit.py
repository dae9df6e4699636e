"""Prompt lookup and the drafting rule, without a model."""

import mlx.core as mx
import numpy as np
from squish.engine.sampling import choose, top_p_filter
from squish.engine.speculative import K_MAX, Drafter, PromptLookup


def test_lookup_takes_the_continuation_of_the_longest_latest_match():
    lookup = PromptLookup([1, 2, 3, 4, 5, 9, 2, 3, 7, 8, 1, 2, 3])
    # (1, 2, 3) last occurred at the start and went on with 4, 5; (2, 3) more recently went on with 7
    assert lookup.draft(3) == [4, 5, 9]
    lookup.extend([4, 5])
    assert lookup.draft(2) == [9, 2]
    assert PromptLookup([5, 6, 7]).draft(4) == []  # nothing repeats
    assert PromptLookup([]).draft(4) == []


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
    assert cheap.limit() == K_MAX  # right every time and rows nearly free: the longest draft
    assert 0 < dear.limit() < cheap.limit()
    cheap.predicted(2, 1)
    cheap.predicted(1, 1)
    assert 0 < cheap.limit() < K_MAX  # a lower rate: a shorter draft pays best
    assert cheap.drafted == 4 and cheap.accepted == 4


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

