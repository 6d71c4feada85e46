"""The e2e bench's capacity search and keep-up rule (bench/e2e_bench.py), on made-up phases."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from bench.e2e_bench import Bench, keeps_up, tail


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


def test_tail_finds_the_slow_second_and_splits_before_and_after_emit() -> None:
    """300 events over 3 s; the events sent in second 1 waited 0.5 s in the worker (0.45 s before
    emit), the rest 0.05 s; one event never covered (NaN) is ignored."""
    sent = 1000.0 + np.arange(300) / 100.0
    lat = np.full(300, 0.05)
    pre = np.full(300, 0.04)
    lat[100:200], pre[100:200] = 0.5, 0.45
    lat[250] = pre[250] = np.nan
    out = tail(lat, pre, sent)
    assert out["max_ms_by_second"] == pytest.approx([50.0, 500.0, 50.0])
    assert out["tail_seconds"] == [1]
    assert out["tail_p50_ms_send_to_emit"] == pytest.approx(450.0)
    assert out["tail_p50_ms_emit_to_arrival"] == pytest.approx(50.0)
    assert tail(np.full(3, np.nan), np.full(3, np.nan), sent[:3]) == {}
