"""The e2e bench's capacity search and keep-up rule (bench/e2e_bench.py), on made-up phases."""

from __future__ import annotations

from typing import Any

import pytest

from bench.e2e_bench import Bench, keeps_up


def _phase(p99: float = 100.0, first: float = 50.0, last: float = 60.0, uncovered: int = 0) -> dict[str, Any]:
    return {"p99_ms": p99, "p50_ms_first_quarter": first, "p50_ms_last_quarter": last, "uncovered_events": uncovered}


def test_keep_up_rule() -> None:
    assert keeps_up(_phase())
    assert not keeps_up(_phase(p99=1500))  # too slow
    assert not keeps_up(_phase(first=50, last=400))  # latency growing over the phase: falling behind
    assert not keeps_up(_phase(uncovered=1))


class _Fake(Bench):
    def __init__(self, capacity: float) -> None:
        self.capacity_true, self.rates = capacity, []

    def phase(self, prefix: str, rate: float, seconds: float) -> dict[str, Any]:
        self.rates.append(rate)
        return {"keeps_up": rate <= self.capacity_true, "target_events_per_s": rate}


@pytest.mark.parametrize("true, start", [(1700.0, 800.0), (1700.0, 4000.0), (300.0, 1000.0)])
def test_capacity_brackets_the_true_rate_from_below(true: float, start: float) -> None:
    b = _Fake(true)
    found, ladder = b.capacity(start, 1.0, 12)
    assert found is not None and true / 1.08 <= found <= true
    assert len(ladder) == len(b.rates) <= 12


def test_capacity_is_none_when_nothing_is_kept_up_with() -> None:
    found, ladder = _Fake(10.0).capacity(1000.0, 1.0, 3)
    assert found is None and len(ladder) == 3
