"""Drift: the live AUC of a stale initialization vs the continual trainer's, test-then-train.

``python bench/drift.py [--quick] [--seed N ...]``. A simulated log drifts at ``DRIFT_AT`` of its
time span (users' tastes move, item popularity is re-drawn, new items arrive: see
:mod:`metarec.data.simulate`). The initialization is meta-trained (``metarec.train.train``) on
the log's first ``TRAIN_UNTIL``; the rest is streamed in time order, in chunks. Every chunk is
first predicted, then learnt from (test-then-train): each of its events is predicted by (a) the
stale initialization and (b) the trainer's current serving version, each adapted on that user's
last ``buffer_size`` events before the chunk (what the worker's buffer holds), as the gate does
(:func:`metarec.continual.gate.evaluate`). Then the chunk goes into the trainer's own core,
:class:`metarec.continual.learner.Learner` (window, warm-started rounds, gate), which runs a
round whenever it is due (an event-count trigger) and adopts an accepted candidate, as the
service does before it publishes. The stream waits for a round (in the service it goes on).

Writes ``bench/results/drift.json|md`` and ``docs/results/continual_drift.png`` (``--quick``:
``bench/results/quick/``, plot included; ``--out DIR``: all three in DIR). The options ``--every-events``,
``--round-steps``, ``--round-budget``, ``--outer-lr``, ``--user-dropout``, ``--window-*`` are the trainer's
levers (``METAREC_ROUND_*``, ``METAREC_OUTER_LR``, ``METAREC_WINDOW_*``). An initialization is cached
under ``.state/drift-models/`` by log and training configuration (``--cache ''``: always train).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402
from metarec import artifact  # noqa: E402
from metarec.continual.gate import adapted_predictions  # noqa: E402
from metarec.continual.learner import Learner, Serving  # noqa: E402
from metarec.continual.rounds import RoundConfig  # noqa: E402
from metarec.continual.window import TaskWindow  # noqa: E402
from metarec.data.simulate import SimConfig, simulate  # noqa: E402
from metarec.events import Event  # noqa: E402
from metarec.features import EventTable, target  # noqa: E402
from metarec.meta import TrainConfig  # noqa: E402
from metarec.model import RecModel, Vocab  # noqa: E402
from metarec.quality import auc, logloss  # noqa: E402
from metarec.train import train  # noqa: E402

DRIFT_AT = 0.5  # the shift, as a fraction of the log's time span
TRAIN_UNTIL = 0.4  # the initialization learns from the log before this fraction; the rest is streamed
WINDOW = (5000, 128, 7 * 86_400.0)  # the trainer's defaults (METAREC_WINDOW_*)
PLOT = common.ROOT / "docs" / "results" / "continual_drift.png"


@dataclasses.dataclass(frozen=True)
class Setup:
    sim: SimConfig
    train_steps: int  # the initialization's outer steps at most ...
    train_budget_s: float  # ... and seconds at most
    rounds: RoundConfig  # each round's budget (its seed is set per run)
    every_events: int  # a round after this many new events in the window
    window: tuple[int, int, float]  # the trainer's window: users, events per user, horizon (s)
    chunk: int  # events predicted, then learnt from, at a time
    buckets: int  # time buckets of the streamed part (the drift falls on a bucket boundary)


def setup(quick: bool) -> Setup:
    # ~128 events per user over 30 days and a 200-item catalog: enough that the initialization,
    # trained on 12 days, generalizes forward in time (adapted AUC ~0.71 before the drift)
    sim = SimConfig(users=800, items=200, mean_events=100.0, drift_at=DRIFT_AT, drift_taste=0.8,
                    drift_popularity=1.0, new_items=50, new_item_share=0.25)
    rounds = RoundConfig(steps=150, budget_s=10.0)
    if quick:
        sim = dataclasses.replace(sim, users=300, items=100, mean_events=60.0, new_items=20)
        return Setup(sim, 200, 20.0, dataclasses.replace(rounds, steps=40, budget_s=4.0), 1500, WINDOW, 500, 6)
    return Setup(sim, 1200, 120.0, rounds, 4000, WINDOW, 1000, 12)


def predict(model: RecModel, vocab: Vocab, history: dict[str, list[Event]], chunk: list[Event]
            ) -> tuple[np.ndarray, np.ndarray]:
    """Labels and predictions ``(N,)`` of ``chunk``'s labelled events, in the order of
    :func:`chunk_rows`: each user adapted on their last ``buffer_size`` events before the chunk."""
    cfg = model.cfg
    by_user: dict[str, list[Event]] = defaultdict(list)
    for e in chunk:
        by_user[e.user_id].append(e)
    tails = {u: history.get(u, [])[-cfg.buffer_size:] for u in by_user}
    table = EventTable.build([e for u in by_user for e in (*tails[u], *by_user[u])], vocab, cfg)
    sup_rows, qry_rows, users = [], [], []
    for k, u in enumerate(table.users):  # rows of a user: the tail, then the chunk (time order)
        lo, hi = int(table.start[k]), int(table.start[k + 1])
        at = lo + sum(target(e.kind, e.value, cfg) is not None for e in tails[u])
        sup_rows.append(np.arange(lo, at))
        qry_rows.append(np.arange(at, hi))
        users.append(int(table.user_idx[lo]))
    return adapted_predictions(model, table, sup_rows, qry_rows, users)  # the gate's own maths


def chunk_rows(chunk: list[Event], cfg: Any) -> tuple[np.ndarray, list[str], list[float]]:
    """Labels, item ids and times of ``chunk``'s labelled events in :func:`predict`'s order."""
    by_user: dict[str, list[Event]] = defaultdict(list)
    for e in chunk:
        if target(e.kind, e.value, cfg) is not None:
            by_user[e.user_id].append(e)
    rows = [e for u in sorted(by_user) for e in sorted(by_user[u], key=lambda e: e.ts)]
    y = np.array([target(e.kind, e.value, cfg) for e in rows], np.float32)
    return y, [e.item_id for e in rows], [e.ts for e in rows]


def figures(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    return {"auc": auc(y, p), "logloss": logloss(y, p), "rows": float(len(y))}


def weights_digest(model: RecModel) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode() + v.numpy().tobytes())
    return h.hexdigest()


def run_seed(s: Setup, seed: int, work: Path, cache: Path | None) -> dict[str, Any]:
    """One drifting log, one initialization (trained, or loaded from ``cache`` when the same
    log and training configuration were trained before), one stream."""
    t0 = time.monotonic()
    sim = dataclasses.replace(s.sim, seed=seed)
    events = simulate(sim)
    span = sim.days * 86400.0
    t_train, t_drift = sim.start_ts + TRAIN_UNTIL * span, sim.drift_ts()
    first = [e for e in events if e.ts < t_train]
    stream = [e for e in events if e.ts >= t_train]
    new_ids = {f"i{i}" for i in range(sim.items, sim.items + sim.new_items)}

    tcfg = TrainConfig(steps=s.train_steps, time_budget_s=s.train_budget_s, seed=seed)
    key = hashlib.sha256(repr((sim, tcfg, TRAIN_UNTIL)).encode()).hexdigest()[:12]
    cached = cache is not None and (cache / key / "latest" / "manifest.json").exists()
    if cached:
        assert cache is not None
        bundle = artifact.load(cache / key / "latest")
    else:
        out = (cache / key) if cache is not None else work / f"seed{seed}"
        bundle = artifact.load(train(first, out, {}, tcfg, source=f"simulated drift seed {seed}"))
    stale, stale_vocab = bundle.model, bundle.vocab
    stale_digest = weights_digest(stale)
    t_trained = time.monotonic()

    window = TaskWindow(*s.window)
    learner = Learner(Serving(stale, stale_vocab, bundle.version), window,
                      dataclasses.replace(s.rounds, seed=seed), every_events=s.every_events, every_s=1e12)
    history: dict[str, list[Event]] = defaultdict(list)
    for e in first:  # the trainer has been running: its window holds the recent past already
        learner.add(e)
        history[e.user_id].append(e)
    learner.since = 0

    rows: dict[str, list[Any]] = defaultdict(list)  # per labelled streamed event
    rounds: list[dict[str, Any]] = []
    for c0 in range(0, len(stream), s.chunk):
        chunk = stream[c0:c0 + s.chunk]
        y, items, ts = chunk_rows(chunk, stale.cfg)
        y_s, p_s = predict(stale, stale_vocab, history, chunk)
        y_c, p_c = predict(learner.serving.model, learner.serving.vocab, history, chunk)
        assert np.array_equal(y, y_s) and np.array_equal(y, y_c), "rows out of order"
        rows["y"] += list(y)
        rows["stale"] += list(p_s)
        rows["continual"] += list(p_c)
        rows["new"] += [i in new_ids for i in items]
        rows["ts"] += ts
        for e in chunk:
            learner.add(e)
            history[e.user_id].append(e)
        if learner.due():
            c = learner.round()
            v = c.verdict
            version = f"r{learner.rounds}"
            if v.accepted:
                learner.adopt(c.model, c.vocab, version)
            rounds.append({
                "round": learner.rounds, "day": (chunk[-1].ts - sim.start_ts) / 86400.0,
                "after_drift": bool(chunk[-1].ts >= t_drift), "accepted": v.accepted, "reason": v.reason,
                "train_users": c.train_users, "steps": c.steps, "seconds": round(c.seconds, 2),
                "new_items": len(c.new_items), "window_users": len(window), "window_events": window.n_events,
                "serving": learner.serving.version, **v.figures(),
            })
    assert weights_digest(stale) == stale_digest, "a round changed the stale model's weights"

    y = np.array(rows["y"])
    p = {k: np.array(rows[k]) for k in ("stale", "continual")}
    new = np.array(rows["new"], bool)
    at = np.array(rows["ts"])  # each labelled event's time
    edges = np.linspace(t_train, sim.start_ts + span, s.buckets + 1)
    b_of = np.clip(np.searchsorted(edges, at, side="right") - 1, 0, s.buckets - 1)
    buckets = []
    for b in range(s.buckets):
        m = b_of == b
        row: dict[str, Any] = {"bucket": b, "day_from": (edges[b] - sim.start_ts) / 86400.0,
                               "day_to": (edges[b + 1] - sim.start_ts) / 86400.0,
                               "after_drift": bool(edges[b] >= t_drift - 1e-6), "rows": int(m.sum()),
                               "new_item_rows": int((m & new).sum())}
        for k in p:
            f, fn = figures(y[m], p[k][m]), figures(y[m & new], p[k][m & new])
            row |= {f"{k}_auc": f["auc"], f"{k}_logloss": f["logloss"], f"{k}_new_auc": fn["auc"]}
        buckets.append(row)

    def phase(m: np.ndarray) -> dict[str, float]:
        out: dict[str, float] = {"rows": float(m.sum())}
        for k in p:
            out |= {f"{k}_auc": auc(y[m], p[k][m]), f"{k}_logloss": logloss(y[m], p[k][m]),
                    f"{k}_new_auc": auc(y[m & new], p[k][m & new]),
                    f"{k}_old_auc": auc(y[m & ~new], p[k][m & ~new])}
        return out

    t_half = t_drift + (sim.start_ts + span - t_drift) / 2
    return {
        "seed": seed, "events": len(events), "train_events": len(first), "stream_events": len(stream),
        "initial_model": {"version": bundle.version, "cached": cached, "outer_steps": bundle.manifest["train"]["outer_steps_done"],
                          "seconds": bundle.manifest["train"]["seconds"],
                          "validation": bundle.manifest.get("validation", {})},
        "buckets": buckets, "rounds": rounds,
        "phases": {"before_drift": phase(at < t_drift), "after_drift": phase(at >= t_drift),
                   "after_drift_second_half": phase(at >= t_half)},
        "accepted": sum(r["accepted"] for r in rounds), "rejected": sum(not r["accepted"] for r in rounds),
        "seconds": {"train": round(t_trained - t0, 1), "total": round(time.monotonic() - t0, 1)},
    }


def plot(runs: list[dict[str, Any]], sim: SimConfig, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    colors = {"stale": "tab:red", "continual": "tab:blue"}
    for i, run in enumerate(runs):
        mid = [(b["day_from"] + b["day_to"]) / 2 for b in run["buckets"]]
        alpha = 0.9 if i == 0 else 0.5  # the first seed bold, the others faint and unlabelled
        for k, col in colors.items():
            axes[0].plot(mid, [b[f"{k}_auc"] for b in run["buckets"]], "-o", color=col, ms=3, alpha=alpha,
                         label=f"{k} initialization" if i == 0 else None)
            axes[0].plot(mid, [b[f"{k}_new_auc"] for b in run["buckets"]], ":", color=col, alpha=alpha * 0.8,
                         label=f"{k}, new items' impressions" if i == 0 else None)
            axes[1].plot(mid, [b[f"{k}_logloss"] for b in run["buckets"]], "-o", color=col, ms=3, alpha=alpha,
                         label=k if i == 0 else None)
        for r in run["rounds"]:  # at the foot of the panel (x: day, y: axes fraction), a row per seed
            axes[1].plot([r["day"]], [0.04 + 0.06 * i], "^", color="tab:blue", alpha=alpha,
                         mfc="tab:blue" if r["accepted"] else "none", ms=6, transform=axes[1].get_xaxis_transform())
    drift_day = (sim.drift_at or 0.0) * sim.days
    for ax in axes:
        ax.axvline(drift_day, color="grey", ls="--", lw=1)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("live adapted AUC (test-then-train)")
    axes[1].set_ylabel("live adapted logloss")
    lo, hi = axes[1].get_ylim()
    axes[1].set_ylim(lo - 0.3 * (hi - lo), hi)  # room for the round markers
    axes[1].set_xlabel("day of the log (drift at the dashed line; ▲ rounds: filled accepted, hollow rejected)")
    seeds = ", ".join(str(r["seed"]) for r in runs)
    axes[0].set_title(f"Stale vs continual initialization under drift (seeds {seeds}; the first bold)")
    axes[0].legend(fontsize=7, loc="lower left")
    axes[1].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(data: dict[str, Any]) -> str:
    out = [f"# Drift: stale vs continual initialization ({'quick' if data['quick'] else 'full'})\n",
           f"Load average at start: {data['machine']['load_avg_at_start']}; wall {data['wall_s']:.0f} s.\n"]
    for run in data["runs"]:
        out.append(f"\n## Seed {run['seed']}: {run['accepted']} rounds accepted, {run['rejected']} rejected, "
                   f"{run['seconds']['total']:.0f} s\n\n")
        out.append(common.table(
            ["days", "drift", "rows", "AUC stale", "AUC continual", "Δ AUC", "logloss stale", "logloss continual",
             "new-item rows", "new-item AUC stale", "new-item AUC continual"],
            [[f"{b['day_from']:.1f}–{b['day_to']:.1f}", "after" if b["after_drift"] else "before", b["rows"],
              b["stale_auc"], b["continual_auc"], b["continual_auc"] - b["stale_auc"], b["stale_logloss"],
              b["continual_logloss"], b["new_item_rows"], b["stale_new_auc"], b["continual_new_auc"]]
             for b in run["buckets"]]))
        out.append("\n")
        out.append(common.table(
            ["phase", "rows", "AUC stale", "AUC continual", "old items stale", "old items continual",
             "new items stale", "new items continual", "logloss stale", "logloss continual"],
            [[k, int(f["rows"]), f["stale_auc"], f["continual_auc"], f["stale_old_auc"], f["continual_old_auc"],
              f["stale_new_auc"], f["continual_new_auc"], f["stale_logloss"], f["continual_logloss"]]
             for k, f in run["phases"].items()]))
        out.append("\nRounds (gate: adapted logloss on the window's newest 20 % of events):\n\n")
        out.append(common.table(
            ["round", "day", "accepted", "reason", "steps", "s", "new items", "serving logloss", "candidate logloss",
             "serving AUC", "candidate AUC"],
            [[r["round"], f"{r['day']:.1f}", r["accepted"], r["reason"], r["steps"], r["seconds"], r["new_items"],
              r.get("current_logloss", float("nan")), r.get("candidate_logloss", float("nan")),
              r.get("current_auc", float("nan")), r.get("candidate_auc", float("nan"))] for r in run["rounds"]]))
    return "".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a smaller log and shorter rounds (a smoke run)")
    ap.add_argument("--seed", type=int, nargs="+", default=[0], help="one run per seed (simulator, training, rounds)")
    ap.add_argument("--every-events", type=int, help="a round after this many new events")
    ap.add_argument("--round-steps", type=int, help="outer steps per round at most")
    ap.add_argument("--round-budget", type=float, help="seconds of meta-training per round at most")
    ap.add_argument("--outer-lr", type=float, help="the rounds' Adam learning rate")
    ap.add_argument("--user-dropout", type=float, help="the rounds' chance a task uses the unknown user")
    ap.add_argument("--window-user-events", type=int, help="newest events the window keeps per user")
    ap.add_argument("--window-horizon-days", type=float, help="users silent for longer leave the window")
    ap.add_argument("--out", type=Path, help="write drift.json|md and the plot here instead")
    ap.add_argument("--cache", type=Path, default=common.ROOT / ".state" / "drift-models",
                    help="initializations trained before, by log and training configuration ('' : none)")
    args = ap.parse_args()
    common.set_threads(1)
    t0 = time.monotonic()
    machine = common.machine()
    s = setup(args.quick)
    rkw = {k: v for k, v in (("steps", args.round_steps), ("budget_s", args.round_budget),
                             ("outer_lr", args.outer_lr), ("user_dropout", args.user_dropout)) if v is not None}
    users, per_user, horizon = s.window
    s = dataclasses.replace(
        s, rounds=dataclasses.replace(s.rounds, **rkw), every_events=args.every_events or s.every_events,
        window=(users, args.window_user_events or per_user,
                horizon if args.window_horizon_days is None else args.window_horizon_days * 86400.0))
    cache = args.cache if str(args.cache) not in ("", ".") else None
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seed:
            runs.append(run_seed(s, seed, Path(tmp), cache))
            ph = runs[-1]["phases"]
            print(f"seed {seed}: " + "; ".join(
                f"{k} AUC stale {f['stale_auc']:.4f} continual {f['continual_auc']:.4f}" for k, f in ph.items()),
                flush=True)
    data = {"quick": args.quick, "machine": machine, "wall_s": time.monotonic() - t0,
            "setup": {"sim": dataclasses.asdict(s.sim), "train_until": TRAIN_UNTIL, "train_steps": s.train_steps,
                      "train_budget_s": s.train_budget_s, "rounds": dataclasses.asdict(s.rounds),
                      "every_events": s.every_events, "chunk": s.chunk, "buckets": s.buckets,
                      "window": dict(zip(("max_users", "user_events", "horizon_s"), s.window))},
            "runs": runs}
    if args.out is not None or args.quick:
        common.RESULTS = args.out or common.RESULTS / "quick"
    md = markdown(data)
    common.write("drift", data, md)
    plot(runs, s.sim, common.RESULTS / "continual_drift.png" if args.out or args.quick else PLOT)
    print(md)


if __name__ == "__main__":
    main()
