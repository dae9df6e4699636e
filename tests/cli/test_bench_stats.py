"""The bench's statistics against reference values (scipy 1.17.1's wilcoxon, computed once)."""

import pytest

from squish.cli.bench_stats import midranks, percentile, round_orders, spread, wilcoxon

# (differences, statistic min(W+, W-), two-sided p) from scipy.stats.wilcoxon(d): method="exact"
# without ties; with ties its default ("auto") takes the exact permutation distribution, as here.
SCIPY = [
    ([6, 8, 14, 16, 23, 24, 28, 29, 41, -48, 49, 56, 60, -67, 75], 24.0, 0.041259765625),  # Fisher's data
    ([1, 2, 3, 4, 5], 0.0, 0.0625),
    ([0.5, 1, 1.5, 2, 3, 4], 0.0, 0.03125),
    ([1.2, -0.4, 2.2, 3.1, -1.7, 0.9, 2.8, 1.1], 6.0, 0.109375),
    ([1, 1, -1, 2, 2, 3, -3, 4], 8.5, 0.2421875),  # tied |differences|
    ([0, 0, 1, 2, -3, 4, 5, 6], 3.0, 0.15625),  # zero differences dropped
]


@pytest.mark.parametrize("diffs, statistic, p_value", SCIPY)
def test_wilcoxon_matches_scipy(diffs, statistic, p_value):
    result = wilcoxon([d + 10 for d in diffs], [10] * len(diffs))
    assert result["statistic"] == statistic
    assert result["p_value"] == pytest.approx(p_value, rel=1e-12)
    assert result["n"] == sum(d != 0 for d in diffs)


def test_wilcoxon_is_symmetric_and_handles_no_difference():
    x, y = [3.0, 5.0, 4.0, 8.0, 9.0], [1.0, 2.0, 4.5, 3.0, 1.0]
    assert wilcoxon(x, y)["p_value"] == wilcoxon(y, x)["p_value"]
    assert wilcoxon([1.0, 2.0], [1.0, 2.0]) == {"n": 0, "statistic": 0.0, "p_value": 1.0}
    with pytest.raises(ValueError, match="differ in length"):
        wilcoxon([1.0], [1.0, 2.0])


def test_midranks_share_ties():
    assert midranks([10, 20, 20, 5]) == [2, 3.5, 3.5, 1]


def test_percentiles_interpolate_like_numpy():
    values = [1.0, 2.0, 3.0, 4.0, 10.0]
    assert percentile(values, 50) == 3.0
    assert percentile(values, 95) == pytest.approx(8.8)
    assert percentile([7.0], 99) == 7.0
    s = spread(values)
    assert s["p50"] == 3.0 and s["p99"] == pytest.approx(9.76)
    assert s["mean"] == 4.0 and s["stddev"] == pytest.approx(3.5355339)
    assert spread([2.0])["stddev"] == 0.0


def test_round_orders_use_every_rotation_equally_in_a_seeded_shuffle():
    sides = ["a", "b", "c"]
    orders = round_orders(sides, 12, seed=3)
    assert len(orders) == 12
    rotations = [sides[k:] + sides[:k] for k in range(3)]
    assert all(order in rotations for order in orders)
    assert all(orders.count(r) == 4 for r in rotations)  # each side first in a third of the rounds
    assert orders == round_orders(sides, 12, seed=3)  # reproducible from the seed
    assert orders != round_orders(sides, 12, seed=4)


def test_round_orders_break_the_period_of_alternation():
    # Rotating by the round number gives A B | B A | A B | ...: with two sides the requests run
    # A B B A A B B A, so a side's position in the stream repeats every four requests.
    orders = round_orders([0, 1], 40)
    stream = [side for order in orders for side in order]
    assert sorted(o[0] for o in orders) == [0] * 20 + [1] * 20  # balanced
    alternating = [side for r in range(40) for side in ([0, 1] if r % 2 == 0 else [1, 0])]
    assert stream != alternating
    # The request at position 4k+1 is not always the same side.
    assert len({stream[i] for i in range(1, 80, 4)}) == 2


def test_round_orders_with_fewer_rounds_than_sides_and_none():
    assert round_orders(["a", "b", "c"], 0) == []
    assert sorted(round_orders(["a", "b", "c"], 2)) == [["a", "b", "c"], ["b", "c", "a"]]
