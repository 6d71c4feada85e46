"""Shared bench plumbing: the machine's description, data, models, timing, result files.

Every figure is measured side by side in one run, in interleaved rounds (A, B, A, B, ...),
and reported with the median of the rounds, so that load from other processes on this
shared machine hits both sides alike. Compute runs on ONE thread (torch and onnxruntime):
figures are per core, and two threads on a 2-core machine shared with other work are slower
than one (the second thread waits on a busy core at every op's barrier).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
ML100K = Path(os.environ.get("METAREC_ML100K", ROOT.parent / "shared" / "data" / "ml-100k"))
ML_USERS, ML_ITEMS = 943, 1682


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor()
    import onnxruntime as ort

    return {
        "cpu": cpu, "cores": os.cpu_count(), "threads_used": torch.get_num_threads(),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(), "torch": torch.__version__, "onnxruntime": ort.__version__,
        "platform": platform.platform(),
        "note": "2-core VM shared with other engineers' jobs: absolute figures are noisy, ratios are "
                "measured side by side in interleaved rounds",
    }


def set_threads(n: int = 1) -> None:
    torch.set_num_threads(n)
    os.environ.setdefault("OMP_NUM_THREADS", str(n))


def events(limit: int | None = None) -> tuple[list, str]:
    """MovieLens-100K's ratings in time order, or a simulated log of the same size when absent."""
    if (ML100K / "u.data").exists():
        from metarec.data import load_events

        evs, source = load_events(ML100K, "ml-100k"), "movielens-100k"
    else:
        from metarec.data.simulate import SimConfig, simulate

        evs, source = simulate(SimConfig(users=ML_USERS, items=ML_ITEMS, mean_events=106.0, seed=0)), "simulated-100k"
    evs = sorted(evs, key=lambda e: e.ts)
    return (evs[:limit] if limit else evs), source


def median_rate(rounds: list[float]) -> float:
    return float(statistics.median(rounds))


def time_call(fn: Callable[[], Any], min_s: float = 0.2, max_reps: int = 1000) -> float:
    """Seconds per call of ``fn`` (one warm call first, then reps until ``min_s``)."""
    fn()
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        dt = time.perf_counter() - t0
        if dt >= min_s or n >= max_reps:
            return dt / n


def gemm_gflops(n: int = 1024, reps: int = 5) -> float:
    """Matmul roofline of this core: the best of ``reps`` ``(n, n) x (n, n)`` float32 GEMMs."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(reps))
    return 2 * n**3 / best / 1e9


def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def write(name: str, data: dict[str, Any], md: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=_json_default))
    (RESULTS / f"{name}.md").write_text(md)
    return path


def _json_default(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(type(x))


def table(header: list[str], rows: list[list[Any]]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:,.3g}" if abs(v) < 100 else f"{v:,.0f}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"
