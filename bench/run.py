"""Run the benchmark suite: ``python bench/run.py [--quick] [--only NAME ...] [--out DIR]``.

Writes ``bench/results/<name>.json`` and ``.md`` per benchmark, PNG plots, and
``bench/results/summary.json`` / ``summary.md`` with the headline figures (``--quick``:
under ``bench/results/quick/``, which git ignores, so a quick run never replaces a full one). The end-to-end
bench uses ``METAREC_KAFKA_BOOTSTRAP`` if set, else 127.0.0.1:9092 if a broker answers there,
else starts the project's own Kafka on port 19192 (``deploy/kafka/kafka.sh``) and stops it after.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common

common.set_threads(1)


def _reachable(hostport: str) -> bool:
    host, port = hostport.split(",")[0].rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except OSError:
        return False


def _broker() -> tuple[str, dict[str, str] | None]:
    given = os.environ.get("METAREC_KAFKA_BOOTSTRAP")
    if given:
        return given, None
    if _reachable("127.0.0.1:9092"):
        return "127.0.0.1:9092", None
    env = {**os.environ, "METAREC_KAFKA_PORT": "19192", "METAREC_KAFKA_STATE": str(common.ROOT / ".state" / "kafka-bench")}
    subprocess.run(["bash", str(common.ROOT / "deploy" / "kafka" / "kafka.sh"), "up"], env=env, check=True)
    return "127.0.0.1:19192", env


def _train(tmp: Path, quick: bool, family: str = "today") -> Path:
    """A model for the stream benches: ``today``'s `metarec train` defaults, or the ``evaluated``
    family (``bench.model_bench``: the ML-1M evaluation's choice) trained on the same log."""
    import torch

    from metarec.meta import TrainConfig
    from metarec.train import train

    evs, source = common.events()
    mode = "rating" if source == "movielens-100k" else "binary"
    kw: dict = {"mode": mode}
    algorithm = "maml"
    if family == "evaluated":
        from bench.model_bench import evaluated_kwargs

        kw, algorithm = evaluated_kwargs(mode)
    torch.set_num_threads(2)  # training is not measured
    d = train(evs, tmp / f"models-{family}", kw,
              TrainConfig(algorithm=algorithm, time_budget_s=6 if quick else 60, seed=0), source=source)
    torch.set_num_threads(1)
    return d


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="the <= 3 minute suite")
    ap.add_argument("--only", nargs="*", default=None, help="adapt export score models river e2e restore")
    ap.add_argument("--e2e-compute", nargs="*", default=["process"], choices=["process", "thread"],
                    help="where the e2e worker adapts and scores (METAREC_COMPUTE); several race side by side")
    ap.add_argument("--e2e-order", nargs="*", default=None, choices=["time", "interleaved"],
                    help="e2e event order(s): the log in time order (sessions coalesce) and/or shuffled "
                         "(about one recommendation per event or two); default both, --quick: time")
    ap.add_argument("--e2e-model", nargs="*", default=["today", "evaluated"], choices=["today", "evaluated"],
                    help="the model family the e2e worker serves: today's `metarec train` defaults and/or the "
                         "family the ML-1M evaluation chose (bench/model_bench.py); several race side by side")
    ap.add_argument("--out", type=Path, default=None,
                    help="results folder (default bench/results; bench/results/quick with --quick, not committed)")
    args = ap.parse_args()
    common.RESULTS = args.out or (common.RESULTS / "quick" if args.quick else common.RESULTS)
    common.RESULTS.mkdir(parents=True, exist_ok=True)  # a fresh clone has no bench/results/quick/
    only = set(args.only or ["adapt", "export", "score", "models", "river", "e2e", "restore"])
    t0 = time.time()
    info = common.machine()
    res: dict[str, dict] = {}
    from bench import adapt_bench, e2e_bench, export_bench, model_bench, restore_bench, river_bench, score_bench

    for name, mod in (("adapt", adapt_bench), ("export", export_bench), ("score", score_bench),
                      ("models", model_bench)):
        if name in only:
            t = time.time()
            res[name] = mod.run(args.quick)
            print(f"bench {name}: {time.time() - t:.0f} s", flush=True)
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        if {"river", "e2e", "restore"} & only:
            t = time.time()
            model_dir = _train(tmp, args.quick)
            print(f"bench train: {time.time() - t:.0f} s", flush=True)
        if "e2e" in only and "evaluated" in args.e2e_model:
            evaluated_dir = _train(tmp, args.quick, "evaluated")
        if "river" in only:
            t = time.time()
            res["river"] = river_bench.run(args.quick, model_dir)
            print(f"bench river: {time.time() - t:.0f} s", flush=True)
        if "restore" in only:
            t = time.time()
            bootstrap, own = _broker()
            try:
                res["restore"] = restore_bench.run(args.quick, model_dir, bootstrap, tmp)
            finally:
                if own is not None:
                    subprocess.run(["bash", str(common.ROOT / "deploy" / "kafka" / "kafka.sh"), "down"], env=own)
            common.write("restore", res["restore"], restore_bench.markdown(res["restore"]))
            print(f"bench restore: {time.time() - t:.0f} s", flush=True)
        if "e2e" in only:
            t = time.time()
            bootstrap, own = _broker()
            try:
                # process: compute in a child process (the default); thread: in the worker's own process
                orders = args.e2e_order or (["time"] if args.quick else ["time", "interleaved"])
                runs = [e2e_bench.run(args.quick, model_dir, bootstrap, v, tmp, o)
                        for v in args.e2e_compute for o in orders] if "today" in args.e2e_model else []
                if "evaluated" in args.e2e_model:  # the same stream, served by the evaluated family
                    for v in args.e2e_compute:
                        r = e2e_bench.run(args.quick, evaluated_dir, bootstrap, v, tmp, orders[0])
                        runs.append({**r, "variant": f"{v}-evaluated-model"})
            finally:
                if own is not None:
                    subprocess.run(["bash", str(common.ROOT / "deploy" / "kafka" / "kafka.sh"), "down"], env=own)
            res["e2e"] = {"broker": bootstrap, "runs": runs}
            common.write("e2e", res["e2e"], e2e_bench.markdown(runs))
            print(f"bench e2e: {time.time() - t:.0f} s", flush=True)
    summary = _summary(res, info, args.quick, time.time() - t0)
    (common.RESULTS / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
    (common.RESULTS / "summary.md").write_text(_summary_md(summary))
    print(_summary_md(summary))


def _summary(res: dict[str, dict], info: dict, quick: bool, seconds: float) -> dict:
    s: dict = {"machine": info, "suite": "bench-quick" if quick else "bench", "seconds": round(seconds, 1),
               "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if "adapt" in res:
        h = res["adapt"]["headline"]
        s.update(adapt_users_per_s_batched=h["users_per_s"], adapt_users_per_s_loop=res["adapt"]["loop_users_per_s"],
                 adapt_speedup=h["speedup_vs_loop"], adapt_roofline_fraction=h["roofline_fraction"],
                 adapt_batched_path=f"{h['path']} (batch {h['batch']})",
                 adapt_users_per_s_vmap=h["vmap_users_per_s"], adapt_speedup_vmap=h["vmap_speedup_vs_loop"],
                 adapt_roofline_fraction_vmap=h["vmap_roofline_fraction"])
    if "export" in res:
        s.update(export_ms_patch=res["export"]["ms_per_user_patch"], export_ms_retrace=res["export"]["ms_per_user_retrace"],
                 export_speedup=res["export"]["speedup"])
    if "score" in res:
        s["score_users_per_s"] = {n: c["users_per_s"] for n, c in res["score"]["catalogs"].items()}
    if "models" in res:
        m = res["models"]
        s.update(evaluated_model_adapt_ratio=m["ratio"]["adapt"], evaluated_model_score_ratio=m["ratio"]["score"],
                 evaluated_family_adapt_ratio_same_shape=m["ratio_same_shape"]["adapt"],
                 evaluated_family_score_ratio_same_shape=m["ratio_same_shape"]["score"],
                 evaluated_model_adapt_users_per_s=m["users_per_s"]["evaluated"]["adapt"],
                 today_model_adapt_users_per_s=m["users_per_s"]["today"]["adapt"])
    if "river" in res:
        r = res["river"]
        s.update(river_events_per_s=r["river_biasedmf"]["events_per_s"], river_rmse=r["river_biasedmf"]["rmse"],
                 river_auc=r["river_biasedmf"]["auc"], metarec_prequential_events_per_s=r["metarec"]["events_per_s"],
                 metarec_rmse=r["metarec"]["rmse"], metarec_auc=r["metarec"]["auc"])
    if "restore" in res:
        r = res["restore"]
        s.update(restore_users=r["users"], **{f"restore_s_{k}": v["start_to_ready_s"] for k, v in r["runs"].items()})
    if "e2e" in res:
        cur = res["e2e"]["runs"][0]
        half, full = cur["phases"].get("50%", {}), cur["phases"].get("100%", {})
        s.update(e2e_events_per_s=cur["events_per_s"], e2e_p50_ms=half.get("p50_ms"), e2e_p99_ms=half.get("p99_ms"),
                 e2e_variant=cur["variant"], e2e_order=cur["order"], e2e_drain_events_per_s=cur["drain_events_per_s"],
                 e2e_p99_ms_at_100=full.get("p99_ms"),
                 e2e_events_per_s_per_worker_core=full.get("events_per_s_per_worker_core"),
                 e2e_worker_cpu_ms_per_event=(full["worker_main_cpu_ms_per_event"]
                                              + full["worker_children_cpu_ms_per_event"]
                                              if "worker_main_cpu_ms_per_event" in full else None))
        for r in res["e2e"]["runs"][1:]:
            h = r["phases"].get("50%", {})
            s[f"e2e_{r['variant']}_{r['order']}"] = {"events_per_s": r["events_per_s"], "p50_ms": h.get("p50_ms"),
                                                     "p99_ms": h.get("p99_ms"),
                                                     "events_per_recommendation": r["events_per_recommendation"]}
    return s


def _summary_md(s: dict) -> str:
    keys = ["adapt_users_per_s_batched", "adapt_users_per_s_loop", "adapt_speedup", "adapt_roofline_fraction",
            "adapt_batched_path", "adapt_users_per_s_vmap", "adapt_speedup_vmap", "adapt_roofline_fraction_vmap",
            "export_ms_patch", "export_ms_retrace", "export_speedup", "evaluated_model_adapt_ratio",
            "evaluated_model_score_ratio", "evaluated_family_adapt_ratio_same_shape",
            "evaluated_family_score_ratio_same_shape", "evaluated_model_adapt_users_per_s", "today_model_adapt_users_per_s",
            "restore_users", "restore_s_memory", "restore_s_rocksdb_first_start", "restore_s_rocksdb_restart",
            "e2e_events_per_s", "e2e_p50_ms", "e2e_p99_ms",
            "e2e_p99_ms_at_100", "e2e_drain_events_per_s", "e2e_events_per_s_per_worker_core",
            "e2e_worker_cpu_ms_per_event",
            "river_events_per_s", "river_rmse", "river_auc", "metarec_prequential_events_per_s", "metarec_rmse",
            "metarec_auc"]
    rows = [[k, s[k]] for k in keys if k in s]
    for k, v in sorted(s.items()):  # the other e2e runs (another event order or compute placement)
        if k.startswith("e2e_") and isinstance(v, dict):
            rows += [[f"{k}: {m}", v[m]] for m in ("events_per_s", "p50_ms", "p99_ms", "events_per_recommendation")]
    m = s["machine"]
    return (f"# metarec {s['suite']} ({s['measured_at']}, {s['seconds']:.0f} s)\n\n"
            f"Machine: {m['cpu']}, {m['cores']} cores (1 compute thread), load {m['load_avg_at_start']}, "
            f"torch {m['torch']}, onnxruntime {m['onnxruntime']}. {m['note']}.\n\n"
            + common.table(["figure", "value"], rows)
            + "\nDetails: adapt.md, export.md, score.md, models.md, e2e.md, river.md (and adapt.png).\n")


if __name__ == "__main__":
    main()
