"""`make demo`: the whole live path once, end to end, on real parts, with a live model swap.

Starts the local Kafka (unless ``METAREC_KAFKA_BOOTSTRAP`` is set), simulates an event log in two
domains (books and music; every user one taste, recommended in both) whose
users' tastes and item popularity shift halfway (and new items arrive), meta-trains on the part
before the shift, starts a worker and the continual trainer, replays the part after the shift,
prints recommendations as they arrive and the moment the worker switches to the trainer's new
version (no restart), stops everything it started and ends with
``demo ok: <N> recommendations for <M> users; model versions served: <v1> -> <v2>``.
Every run uses fresh topic names, so a rerun never sees an earlier run's state.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STATE = ROOT / ".state" / "demo"
#: events/s; the simulated log interleaves 600 users (about one recommendation per event), which a
#: worker on a 2-core machine shared with Kafka holds at ~600-800 events/s (bench/results/e2e.md)
REPLAY_RATE = 500


def consumed(port: str) -> float:
    """Events the worker has taken in (valid or dead-lettered), from its /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines()
               if ln.startswith(("metarec_events_consumed_total{", "metarec_events_dead_lettered_total ")))


def say(msg: str) -> None:
    print(f"\033[1;36m==>\033[0m {msg}", flush=True)


def run(*args: str, env: dict[str, str] | None = None) -> None:
    subprocess.run([sys.executable, "-m", "metarec", *args], check=True, env=env)


def wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"demo: the worker exited with status {proc.returncode}; see {STATE / 'worker.log'}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"demo: the worker did not answer {url} within {timeout:.0f} s; see {STATE / 'worker.log'}")


def main() -> None:
    t0 = time.monotonic()
    STATE.mkdir(parents=True, exist_ok=True)
    tag = time.strftime("%Y%m%d%H%M%S")
    env = {**os.environ,
           "METAREC_TOPIC_EVENTS": f"metarec.demo-{tag}.events",
           "METAREC_TOPIC_RECOMMENDATIONS": f"metarec.demo-{tag}.recommendations",
           "METAREC_TOPIC_DEAD_LETTER": f"metarec.demo-{tag}.dead-letter",
           "METAREC_TOPIC_MODELS": f"metarec.demo-{tag}.models",
           "METAREC_APP_ID": f"metarec-demo-{tag}",
           "METAREC_MODEL_DIR": str(STATE / "models" / "latest"),
           "METAREC_DATA_DIR": str(STATE / "worker-data"),
           "METAREC_WEB_PORT": os.environ.get("METAREC_WEB_PORT", "6066"),
           # the continual trainer: small, frequent rounds, so the demo shows a swap within a minute
           "METAREC_MODELS_ROOT": str(STATE / "models"), "METAREC_TRAINER_GROUP": f"metarec-demo-{tag}-trainer",
           "METAREC_TRAINER_WEB_PORT": os.environ.get("METAREC_TRAINER_WEB_PORT", "6067"),
           "METAREC_ROUND_EVERY_EVENTS": "3000", "METAREC_ROUND_EVERY_S": "3600", "METAREC_ROUND_STEPS": "150",
           "METAREC_ROUND_BUDGET_S": "15", "METAREC_OUTER_LR": "0.003"}
    started_kafka = False
    if not os.environ.get("METAREC_KAFKA_BOOTSTRAP"):
        say("starting the local Apache Kafka")
        up = subprocess.run(["bash", str(ROOT / "deploy/kafka/kafka.sh"), "up"], capture_output=True, text=True)
        print(up.stdout.strip(), file=sys.stderr if up.returncode else sys.stdout)
        if up.returncode:
            raise SystemExit(up.stderr.strip())
        started_kafka = "already running" not in up.stdout
    procs: list[subprocess.Popen[bytes]] = []
    try:
        say("simulating users with latent tastes (seeded) in two domains, books and music, one taste per user; "
            "halfway, tastes and popularity shift and 50 items arrive")
        run("simulate", "--out", str(STATE / "sim.jsonl"), "--users", "600", "--items", "500", "--drift-at", "0.5",
            "--new-items", "50", "--after-out", str(STATE / "live.jsonl"), "--domains", "books,music", env=env)
        say("meta-training the initialization on the events before the shift (MAML over users as tasks, <= 2 min)")
        for old in (STATE / "models").glob("*"):  # a rerun starts from a fresh models folder
            subprocess.run(["rm", "-rf", str(old)], check=True)
        run("train", "--events", str(STATE / "sim.jsonl"), "--out", str(STATE / "models"),
            "--budget-seconds", "100", env=env)
        level = os.environ.get("METAREC_DEMO_LOGLEVEL", "warning")
        say("starting the adapter worker and the continual trainer")
        worker = start(["worker", "--loglevel", level], "worker.log", env)
        procs.append(worker)
        procs.append(start(["trainer", "--loglevel", "info"], "trainer.log", env))
        wait_http(f"http://127.0.0.1:{env['METAREC_WEB_PORT']}/metrics", 120, worker)
        recs, users, versions = consume_while_replaying(env, worker)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{env['METAREC_WEB_PORT']}/metrics").read().decode()
        show_metrics(metrics)
        if not recs:
            raise SystemExit("demo: no recommendations arrived")
        if len(versions) < 2:
            raise SystemExit(f"demo: the worker served only {versions}; the trainer published nothing in time "
                             f"(see {STATE / 'trainer.log'})")
        say(f"finished in {time.monotonic() - t0:.0f} s")
        print(f"demo ok: {recs} recommendations for {len(users)} users; model versions served: "
              f"{' -> '.join(versions)} (hot swap, same worker process {worker.pid})", flush=True)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
        if started_kafka:
            subprocess.run(["bash", str(ROOT / "deploy/kafka/kafka.sh"), "down"], check=False)


def start(args: list[str], log: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    out = open(STATE / log, "wb")
    return subprocess.Popen([sys.executable, "-m", "metarec", *args], env=env, stdout=out, stderr=subprocess.STDOUT)


def swaps(port: str) -> float:
    """Model switches the worker made (its /metrics)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines()
               if ln.startswith('metarec_model_swaps_total{result="ok"}'))


def consume_while_replaying(env: dict[str, str], worker: subprocess.Popen[bytes]) -> tuple[int, set[str], list[str]]:
    """Replay the log after the shift in a thread (its first half, then, once the worker has
    switched to the trainer's version or 150 s have passed, the rest) while reading
    recommendations here; returns (count, users, model versions in the order served)."""
    os.environ.update(env)
    from metarec.data import write_jsonl
    from metarec.data.eventlog import read_jsonl
    from metarec.kafka_io import recommendations_consumer
    from metarec.settings import KafkaSettings

    settings = KafkaSettings()
    consumer = recommendations_consumer(settings, from_beginning=True)
    done = threading.Event()
    live = list(read_jsonl(STATE / "live.jsonl"))
    halves = (live[: len(live) // 2], live[len(live) // 2:])
    for i, part in enumerate(halves):
        write_jsonl(part, STATE / f"live-{i}.jsonl")
    total = len(live)
    port = env["METAREC_WEB_PORT"]

    def replay() -> None:
        try:
            run("replay", "--events", str(STATE / "live-0.jsonl"), "--rate", str(REPLAY_RATE), "--now", env=env)
            deadline = time.monotonic() + 150
            while time.monotonic() < deadline and worker.poll() is None and swaps(port) < 1:
                time.sleep(1.0)
            run("replay", "--events", str(STATE / "live-1.jsonl"), "--rate", str(REPLAY_RATE), "--now", env=env)
        finally:
            done.set()

    say(f"replaying the {total} events after the shift at {REPLAY_RATE}/s into {settings.topic_events} (half, "
        "then the rest once the worker serves the trainer's new version); recommendations as they arrive:")
    thread = threading.Thread(target=replay, daemon=True)
    thread.start()
    count, users, versions = 0, set(), []
    last = time.monotonic()
    deadline = time.monotonic() + 480
    try:
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for msg in records:
                    rec = msg.value
                    count += 1
                    users.add(rec["user_id"])
                    if rec["model_version"] not in versions:  # partitions interleave: each version once
                        if versions:
                            say(f"recommendation #{count}: the worker now serves model {rec['model_version']} "
                                f"(was {versions[-1]}), published by the continual trainer; no restart")
                        versions.append(rec["model_version"])
                    if count <= 12 or count % 1000 == 0:
                        late = (rec["emitted_at"] - rec["last_event_ts"]) * 1000
                        print(f"  #{count:<6} {rec['user_id']:>5} after {rec['events_seen']:>3} events, "
                              f"{rec.get('domain') or 'default':>5} -> {' '.join(rec['items'][:6])}  "
                              f"({late:.0f} ms after the event)", flush=True)
                    last = time.monotonic()
            # done when every replayed event was consumed and the last recommendations are in
            if done.is_set() and time.monotonic() - last > 3 and consumed(port) >= total:
                break
    finally:
        consumer.close()
    thread.join()
    return count, users, versions


def show_metrics(text: str) -> None:
    keep = ("metarec_events_consumed_total", "metarec_recommendations_emitted_total", "metarec_live_auc",
            "metarec_adapt_seconds_count", "metarec_event_to_recommendation_seconds_sum", "metarec_model_swaps_total",
            "metarec_model_info")
    lines = [ln for ln in text.splitlines() if ln.startswith(keep)]
    say("worker metrics:")
    for ln in lines:
        print("  " + ln)


if __name__ == "__main__":
    main()
