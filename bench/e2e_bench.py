"""4. End to end on a real broker: one worker process's sustained events/s, then the
event→recommendation latency at 25%, 50% and 100% of that rate.

Sustained rate: the highest constant rate the worker keeps up with (:func:`keeps_up`), found
by a ladder of short phases (:meth:`Bench.capacity`) from 500 events/s, then confirmed by a
phase twice as long (stepping down 15% at a time while it fails). The rate at which the
worker drains a backlog is reported too, but draining coalesces many more events per
recommendation, so it overstates what the worker holds at a steady rate.
Latency: a producer process sends at a fixed rate, recording each event's send time; each
event's latency is the arrival, at a consumer, of the first recommendation whose
``events_seen`` covers it, minus that send time. Each phase uses fresh user ids (prefixed),
so users start empty in every phase; items are MovieLens-100K's (or the simulated log's).
CPU: each phase also reports the worker's CPU seconds per event (:mod:`bench.procstat`), so
the figure per worker core does not depend on what else shares the machine.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from bench import common, procstat
from bench.e2e_load import Recs, counts, free_port, latencies, prefixed, produce, wait
from metarec.events import Event
from metarec.kafka_io import ensure_topics
from metarec.settings import KafkaSettings

#: a constant rate is "kept up with" when every event is covered, p99 stays under this, and
#: latency does not grow over the phase (p50 of its last quarter ≤ 2 × the first's + 100 ms)
KEEP_UP_P99_MS = 1000.0


def keeps_up(ph: dict[str, Any]) -> bool:
    """Every event covered, p99 ≤ 1 s, and the last quarter's p50 ≤ 2 × the first quarter's + 100 ms."""
    return (ph["uncovered_events"] == 0 and ph["p99_ms"] <= KEEP_UP_P99_MS
            and ph["p50_ms_last_quarter"] <= 2 * ph["p50_ms_first_quarter"] + 100)


def tail(lat: np.ndarray, pre: np.ndarray, sent: np.ndarray) -> dict[str, Any]:
    """Where a phase's slowest 1% sits: the worst latency per second of the phase (by send
    time), and, for events at or above p99, the median time before the worker emitted the
    recommendation and after (worker/ingest vs delivery to the reader)."""
    ok = ~np.isnan(lat)
    if not ok.any():
        return {}
    sec = np.floor(sent - sent[0]).astype(int)
    worst = [float(np.nanmax(lat[sec == k]) * 1e3) if np.any(ok & (sec == k)) else None
             for k in range(int(sec.max()) + 1)]
    slow = ok & (lat >= np.nanpercentile(lat, 99))
    return {"max_ms_by_second": worst, "tail_seconds": sorted({int(k) for k in sec[slow]}),
            "tail_p50_ms_send_to_emit": float(np.median(pre[slow]) * 1e3),
            "tail_p50_ms_emit_to_arrival": float(np.median((lat - pre)[slow]) * 1e3)}


class Bench:
    """One worker under test, the recommendations reader, and phases of load at a constant rate."""

    def __init__(self, settings: KafkaSettings, recs: Recs, worker_pid: int, evs: list[Event]) -> None:
        self.settings, self.recs, self.pid, self.evs = settings, recs, worker_pid, evs
        self.ctx = mp.get_context("fork")
        self.offset = 0

    def produce(self, evs: list[Event], rate: float) -> tuple[list[float], float]:
        q = self.ctx.Queue()
        p = self.ctx.Process(target=produce, args=(self.settings, evs, rate, q))
        p.start()
        sent, achieved = q.get()
        p.join()
        return sent, achieved

    def phase(self, prefix: str, rate: float, seconds: float) -> dict[str, Any]:
        """``rate`` events/s for ``seconds`` on fresh users; latency, growth and CPU per event."""
        n = max(int(rate * seconds), 50)
        src = self.evs[self.offset:] + self.evs[:self.offset]
        self.offset = (self.offset + n) % len(self.evs)
        evs = prefixed(src, prefix, n)
        before = procstat.Snapshot.take(self.pid)
        t0 = time.monotonic()
        sent, achieved = self.produce(evs, rate)
        wait(self.recs, counts(evs), 30 + seconds)
        wall = time.monotonic() - t0
        cpu = procstat.delta(before, procstat.Snapshot.take(self.pid), self.pid)
        lat, pre = latencies(evs, sent, self.recs, prefix)
        wait(self.recs, counts(evs), 120)  # a phase that fell behind: let the worker catch up first
        ok, q = lat[~np.isnan(lat)] * 1e3, max(len(lat) // 4, 1)

        def pct(x: np.ndarray, k: float) -> float:
            x = x[~np.isnan(x)]
            return float(np.percentile(x, k)) if len(x) else float("nan")

        out: dict[str, Any] = {
            "target_events_per_s": rate, "produced_events_per_s": achieved, "events": n,
            "uncovered_events": int(np.isnan(lat).sum()),
            **{f"p{k}_ms": pct(ok, k) for k in (50, 95, 99)}, "max_ms": pct(ok, 100),
            "p50_ms_first_quarter": pct(lat[:q] * 1e3, 50), "p50_ms_last_quarter": pct(lat[-q:] * 1e3, 50),
            "p50_ms_send_to_emit": pct(pre * 1e3, 50), "p50_ms_emit_to_arrival": pct((lat - pre) * 1e3, 50),
            "wall_s": wall, **tail(lat, pre, np.asarray(sent))}
        if cpu["worker_main_s"] is not None:
            worker_s = cpu["worker_main_s"] + (cpu["worker_children_s"] or 0.0)
            out.update(worker_main_cpu_ms_per_event=cpu["worker_main_s"] * 1e3 / n,
                       worker_children_cpu_ms_per_event=(cpu["worker_children_s"] or 0.0) * 1e3 / n,
                       events_per_s_per_worker_core=n / max(worker_s, 1e-9))
            busy, total = cpu.get("machine_busy_s"), cpu.get("machine_total_s")
            if busy is not None and total is not None:
                out["machine_busy_fraction"] = busy / max(total, 1e-9)
                out["worker_share_of_busy"] = worker_s / max(busy, 1e-9)
        out["keeps_up"] = keeps_up(out)
        return out

    def capacity(self, start: float, seconds: float, steps: int,
                 up: float = 1.5) -> tuple[float | None, list[dict[str, Any]]]:
        """The highest constant rate kept up with: ×``up`` while kept up, ×0.6 until it is, then
        bisect (geometrically) between the best kept and the lowest lost, to within 8%."""
        lo: float | None = None
        hi: float | None = None
        rate, ladder = start, []
        for i in range(steps):
            ph = self.phase(f"c{i}-", rate, seconds)
            ladder.append(ph)
            if ph["keeps_up"]:
                lo = rate
            else:
                hi = rate
            if lo is not None and hi is not None:
                if hi / lo < 1.08:
                    break
                rate = (lo * hi) ** 0.5
            else:
                rate = rate * up if hi is None else rate * 0.6
        return lo, ladder


def run(quick: bool, model_dir: Path, bootstrap: str, variant: str = "process",
        tmp: Path | None = None, order: str = "time") -> dict[str, Any]:
    """``order``: ``time`` replays the log in time order (a MovieLens user rates in sessions, so
    many events of a user coalesce into one recommendation); ``interleaved`` shuffles it (seeded),
    so consecutive events are mostly other users' — about one recommendation per event or two."""
    evs, source = common.events()
    if order == "interleaved":
        evs = [evs[i] for i in np.random.default_rng(0).permutation(len(evs))]
    tag = uuid.uuid4().hex[:10]
    env_topics = {"METAREC_TOPIC_EVENTS": f"bench-{tag}-events", "METAREC_TOPIC_RECOMMENDATIONS": f"bench-{tag}-recs",
                  "METAREC_TOPIC_DEAD_LETTER": f"bench-{tag}-dlq", "METAREC_TOPIC_MODELS": f"bench-{tag}-models",
                  "METAREC_APP_ID": f"bench-{tag}-adapter"}
    settings = KafkaSettings(kafka_bootstrap=bootstrap, topic_events=env_topics["METAREC_TOPIC_EVENTS"],
                             topic_recommendations=env_topics["METAREC_TOPIC_RECOMMENDATIONS"],
                             topic_dead_letter=env_topics["METAREC_TOPIC_DEAD_LETTER"],
                             topic_models=env_topics["METAREC_TOPIC_MODELS"])
    ensure_topics(settings)
    n_sat = 1_500 if quick else 12_000
    probe_s, phase_s, steps = (4.0, 5.0, 3) if quick else (10.0, 20.0, 8)

    recs = Recs(settings)
    recs.start()
    bench = Bench(settings, recs, 0, evs)
    backlog = prefixed(evs, "s-", n_sat)
    _, produce_rate = bench.produce(backlog, 0.0)
    bench.offset = n_sat % len(evs)

    workdir = Path(tmp or "/tmp") / f"bench-worker-{tag}"
    workdir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **env_topics, "METAREC_KAFKA_BOOTSTRAP": bootstrap, "METAREC_DATA_DIR": str(workdir),
           "METAREC_COMPUTE": variant, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(common.ROOT / "shared"), str(common.ROOT)])}
    log = open(workdir / "worker.log", "w")
    t_start = time.time()
    worker = subprocess.Popen([sys.executable, "-m", "metarec", "worker", "--model-dir", str(model_dir),
                               "--web-port", str(free_port()), "--loglevel", "warning"],
                              env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(workdir))
    bench.pid = worker.pid
    out: dict[str, Any] = {"source": source, "variant": variant, "order": order, "backlog_events": n_sat,
                           "backlog_produce_events_per_s": produce_rate, "keep_up_rule": keeps_up.__doc__ or "",
                           "phases": {}}
    try:
        want = counts(backlog)
        if not wait(recs, want, 60 + n_sat / 50):
            raise RuntimeError(f"e2e: the worker covered {recs.covered(want)} of {n_sat} backlog events; "
                               f"see {workdir / 'worker.log'}")
        with recs.lock:
            arr = sorted(a for a, u, _ in recs.got if u.startswith("s-"))
            first = min((a, n) for a, u, n in recs.got if u.startswith("s-"))
        drain = (n_sat - first[1]) / max(arr[-1] - arr[0], 1e-3)
        out.update(drain_events_per_s=drain, worker_start_to_first_rec_s=arr[0] - t_start,
                   recommendations_for_backlog=len(arr), events_per_recommendation=n_sat / len(arr))
        # the drain rate coalesces many events per user, so it is no guide to the steady rate
        sustained, ladder = bench.capacity(min(500.0, drain / 2), probe_s, steps, up=2.0 if quick else 1.5)
        if sustained is not None:
            # confirm with a longer phase: a short probe can miss a slow fall behind; step down until it holds
            for attempt in range(3):
                full = bench.phase(f"p100-{attempt}-", sustained, phase_s)
                if full["keeps_up"] or attempt == 2:
                    break
                ladder.append(full)
                sustained *= 0.85
            out["phases"]["100%"] = full
            out["sustained_confirmed"] = bool(full["keeps_up"])  # False: even the last step down fell behind
            for frac in (0.25, 0.5):
                out["phases"][f"{int(frac * 100)}%"] = bench.phase(f"p{int(frac * 100)}-", frac * sustained, phase_s)
            out["phases"] = {k: out["phases"][k] for k in ("25%", "50%", "100%")}
        out.update(events_per_s=sustained, capacity_ladder=ladder)
    finally:
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
        recs.stop.set()
        recs.join(5)
        log.close()
    return out


def _f(x: Any, fmt: str = ",.0f") -> str:
    return "–" if x is None or (isinstance(x, float) and np.isnan(x)) else format(x, fmt)


def markdown(results: list[dict[str, Any]]) -> str:
    rows, ladder = [], []
    for r in results:
        for name, ph in r["phases"].items():
            rows.append([f"{r['variant']}, {r.get('order', 'time')}", _f(r["events_per_s"]), name, _f(ph["target_events_per_s"]),
                         _f(ph["produced_events_per_s"]), _f(ph["p50_ms"]), _f(ph["p95_ms"]), _f(ph["p99_ms"]),
                         _f(ph["p50_ms_send_to_emit"]), _f(ph["p50_ms_emit_to_arrival"]), ph["uncovered_events"],
                         _f(ph.get("events_per_s_per_worker_core")), _f(ph.get("machine_busy_fraction"), ".0%"),
                         _f(ph.get("worker_share_of_busy"), ".0%")])
        for ph in r["capacity_ladder"]:
            ladder.append([f"{r['variant']}, {r.get('order', 'time')}", _f(ph["target_events_per_s"]), _f(ph["p50_ms"]), _f(ph["p99_ms"]),
                           _f(ph["p50_ms_first_quarter"]), _f(ph["p50_ms_last_quarter"]), ph["uncovered_events"],
                           "yes" if ph["keeps_up"] else "no", _f(ph.get("events_per_s_per_worker_core"))])
    tails = []
    for r in results:
        for name, ph in r["phases"].items():
            if "max_ms_by_second" in ph:
                worst = ", ".join(_f(x) for x in ph["max_ms_by_second"])
                tails.append(f"- {r['variant']}, {r.get('order', 'time')}, {name}: slowest 1% median "
                             f"{_f(ph['tail_p50_ms_send_to_emit'])} ms before the worker emitted, "
                             f"{_f(ph['tail_p50_ms_emit_to_arrival'])} ms after; in seconds "
                             f"{ph['tail_seconds']}; worst per second: {worst}\n")
    head = ["compute, event order", "sustained ev/s", "load", "target ev/s", "produced ev/s", "p50 ms", "p95 ms", "p99 ms",
            "p50 send→emit", "p50 emit→arrival", "uncovered", "ev/s per worker core", "machine busy",
            "worker's share"]
    return ("# End to end (real Kafka broker, one worker)\n\n"
            "Sustained: the highest constant rate the worker keeps up with (every event covered, p99 ≤ "
            f"{KEEP_UP_P99_MS:.0f} ms, latency not growing over the phase), found by the ladder below. "
            "Latency: event send time → arrival of the first recommendation covering it at a consumer. "
            "Events/s per worker core: events ÷ CPU seconds of the worker's processes (main + compute "
            "child) over the phase; the load generator, the reader and the broker share the machine "
            "(machine busy, worker's share of it).\n\n"
            + common.table(head, rows)
            + "\n## Capacity ladder\n\n"
            + common.table(["compute, event order", "rate ev/s", "p50 ms", "p99 ms", "p50 first ¼", "p50 last ¼", "uncovered",
                            "kept up", "ev/s per worker core"], ladder)
            + "\nBacklog drain (the worker started on a backlog; several events of a user coalesce): "
            + ", ".join(f"{r['variant']}, {r.get('order', 'time')}: {_f(r['drain_events_per_s'])} ev/s, "
                        f"{r['events_per_recommendation']:.2f} events per recommendation" for r in results) + ".\n"
            + ("\n## Latency tails\n\nWhere each phase's slowest 1% sits (by send time, second of the phase) "
               "and whether it waited before the worker emitted (ingest, coalescing, compute) or after "
               "(delivery to the reader).\n\n" + "".join(tails) if tails else ""))
