"""The statistics of `squish bench`: percentiles, spreads, the Wilcoxon signed-rank test, and the
order of interleaved rounds.

Pure Python, no I/O: the bench and the benchmark scripts share these.
"""

import math
import random
import statistics
from fractions import Fraction


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile with linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def spread(values: list[float]) -> dict:
    """p50, p95, p99, mean and sample standard deviation of one measured quantity."""
    return {
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "mean": statistics.fmean(values),
        "stddev": statistics.stdev(values) if len(values) > 1 else 0.0,
    }


def midranks(values: list[float]) -> list[Fraction]:
    """Ranks 1..n of `values`, ties sharing the mean of the ranks they span."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [Fraction(0)] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = Fraction(i + j + 2, 2)
        i = j + 1
    return ranks


def wilcoxon(x: list[float], y: list[float]) -> dict:
    """Two-sided Wilcoxon signed-rank test of paired samples: is x - y centred on zero?

    Exact: zero differences are dropped (Wilcoxon's method), tied |differences| get mid-ranks,
    and the p-value comes from the exact distribution of the positive-rank sum over all 2^n sign
    assignments of those ranks (the permutation distribution, so ties are handled exactly too).
    Returns n (pairs with a difference), the statistic min(W+, W-) and the p-value; with no
    non-zero difference the p-value is 1.
    """
    if len(x) != len(y):
        raise ValueError(f"paired samples differ in length: {len(x)} and {len(y)}")
    diffs = [a - b for a, b in zip(x, y) if a != b]
    n = len(diffs)
    if n == 0:
        return {"n": 0, "statistic": 0.0, "p_value": 1.0}
    ranks = midranks([abs(d) for d in diffs])
    doubled = [int(r * 2) for r in ranks]  # mid-ranks are halves: doubling makes them integers
    w_plus = sum(r for r, d in zip(doubled, diffs) if d > 0)
    total = sum(doubled)
    counts = {0: 1}  # sum of positive doubled ranks -> number of sign assignments giving it
    for r in doubled:
        grown = dict(counts)
        for s, c in counts.items():
            grown[s + r] = grown.get(s + r, 0) + c
        counts = grown
    at_most = sum(c for s, c in counts.items() if s <= w_plus)
    at_least = sum(c for s, c in counts.items() if s >= w_plus)
    p = min(1.0, 2 * min(at_most, at_least) / 2**n)
    return {"n": n, "statistic": min(w_plus, total - w_plus) / 2, "p_value": p}


def round_orders(sides: list, rounds: int, seed: int = 0) -> list[list]:
    """The order of `sides` in each of `rounds` interleaved rounds: rotations of `sides`, each one
    as often as `rounds` allows, in an order shuffled by `seed`.

    Not rotated by the round number: such an order repeats with a fixed period, and a disturbance
    on the machine with a matching period then falls on the same side every round. With two
    sides the requests ran A B B A A B B A; a slowdown every four requests (about 10 s on the
    2-core VM) made one side of benchmarks/speculative.py read 5% slow in every pair of a run,
    and the other side in the next run (docs/speculative.md).
    """
    offsets = [r % len(sides) for r in range(rounds)]
    random.Random(seed).shuffle(offsets)
    return [sides[k:] + sides[:k] for k in offsets]
