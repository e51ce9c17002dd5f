"""DecodeOutlook: the peak KV of requests decoding to a known end, against a step-by-step simulation."""

import random

import pytest

from sgl.runtime.scheduler.admission import DecodeOutlook


def simulated_peak(items):
    """Step by step: each running request takes a slot per step; at its end it frees `release`."""
    used = peak = 0
    running = list(items)
    step = 0
    while running:
        step += 1
        used += len(running)
        peak = max(peak, used)
        for left, release in [r for r in running if r[0] == step]:
            used -= release
        running = [r for r in running if r[0] > step]
    return peak


@pytest.mark.parametrize("seed", range(20))
def test_peak_matches_simulation(seed):
    rng = random.Random(seed)
    items = []
    for _ in range(rng.randint(0, 12)):
        left = rng.randint(1, 40)
        items.append((left, rng.choice([0, left + rng.randint(0, 50)])))
    outlook = DecodeOutlook(items[:-1])
    extra = items[-1] if items else None
    assert outlook.peak(extra) == simulated_peak(items)
    if extra is not None:
        outlook.add(extra)
    assert outlook.peak() == simulated_peak(items)


def test_equal_requests_peak_at_the_sum_and_staggered_ones_below_it():
    assert DecodeOutlook([(10, 30)] * 4).peak() == 40
    # the short one ends first and frees its prompt too: the long one reuses that memory
    assert DecodeOutlook([(4, 24), (60, 80)]).peak() == 40
    assert DecodeOutlook().peak() == 0
