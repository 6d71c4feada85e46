"""`make demo`: the whole live path once, end to end, on real parts.

Starts the local Kafka (unless ``METAREC_KAFKA_BOOTSTRAP`` is set), simulates an event log,
meta-trains, starts a worker, replays the events, prints recommendations as they arrive,
stops everything it started and ends with ``demo ok: <N> recommendations for <M> users``.
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
REPLAY_EVENTS = 15000
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
           "METAREC_WEB_PORT": os.environ.get("METAREC_WEB_PORT", "6066")}
    started_kafka = False
    if not os.environ.get("METAREC_KAFKA_BOOTSTRAP"):
        say("starting the local Apache Kafka")
        up = subprocess.run(["bash", str(ROOT / "deploy/kafka/kafka.sh"), "up"], capture_output=True, text=True)
        print(up.stdout.strip(), file=sys.stderr if up.returncode else sys.stdout)
        if up.returncode:
            raise SystemExit(up.stderr.strip())
        started_kafka = "already running" not in up.stdout
    worker: subprocess.Popen[bytes] | None = None
    try:
        say("simulating users with latent tastes (seeded)")
        run("simulate", "--out", str(STATE / "sim.jsonl"), "--users", "600", "--items", "500", env=env)
        say("meta-training the initialization (MAML over users as tasks, <= 2 minutes)")
        run("train", "--events", str(STATE / "sim.jsonl"), "--out", str(STATE / "models"),
            "--budget-seconds", "110", env=env)
        say("starting the adapter worker")
        log = open(STATE / "worker.log", "wb")
        level = os.environ.get("METAREC_DEMO_LOGLEVEL", "warning")
        worker = subprocess.Popen([sys.executable, "-m", "metarec", "worker", "--loglevel", level],
                                  env=env, stdout=log, stderr=subprocess.STDOUT)
        wait_http(f"http://127.0.0.1:{env['METAREC_WEB_PORT']}/metrics", 120, worker)
        recs, users = consume_while_replaying(env)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{env['METAREC_WEB_PORT']}/metrics").read().decode()
        show_metrics(metrics)
        if not recs:
            raise SystemExit("demo: no recommendations arrived")
        say(f"finished in {time.monotonic() - t0:.0f} s")
        print(f"demo ok: {recs} recommendations for {len(users)} users", flush=True)
    finally:
        if worker is not None and worker.poll() is None:
            worker.terminate()
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
        if started_kafka:
            subprocess.run(["bash", str(ROOT / "deploy/kafka/kafka.sh"), "down"], check=False)


def consume_while_replaying(env: dict[str, str]) -> tuple[int, set[str]]:
    """Replay the log in a thread while reading recommendations here; returns (count, users)."""
    os.environ.update(env)
    from metarec.kafka_io import recommendations_consumer
    from metarec.settings import KafkaSettings

    settings = KafkaSettings()
    consumer = recommendations_consumer(settings, from_beginning=True)
    done = threading.Event()

    def replay() -> None:
        try:
            run("replay", "--events", str(STATE / "sim.jsonl"), "--rate", str(REPLAY_RATE),
                "--limit", str(REPLAY_EVENTS), "--now", env=env)
        finally:
            done.set()

    say(f"replaying {REPLAY_EVENTS} events at {REPLAY_RATE}/s into {settings.topic_events}; "
        "recommendations as they arrive:")
    thread = threading.Thread(target=replay, daemon=True)
    thread.start()
    count, users = 0, set()
    last = time.monotonic()
    deadline = time.monotonic() + 300
    port = env["METAREC_WEB_PORT"]
    try:
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for msg in records:
                    rec = msg.value
                    count += 1
                    users.add(rec["user_id"])
                    if count <= 12 or count % 1000 == 0:
                        late = (rec["emitted_at"] - rec["last_event_ts"]) * 1000
                        print(f"  #{count:<6} {rec['user_id']:>5} after {rec['events_seen']:>3} events -> "
                              f"{' '.join(rec['items'][:6])}  ({late:.0f} ms after the event)", flush=True)
                    last = time.monotonic()
            # done when every replayed event was consumed and the last recommendations are in
            if done.is_set() and time.monotonic() - last > 3 and consumed(port) >= REPLAY_EVENTS:
                break
    finally:
        consumer.close()
    thread.join()
    return count, users


def show_metrics(text: str) -> None:
    keep = ("metarec_events_consumed_total", "metarec_recommendations_emitted_total", "metarec_live_auc",
            "metarec_adapt_seconds_count", "metarec_event_to_recommendation_seconds_sum")
    lines = [ln for ln in text.splitlines() if ln.startswith(keep)]
    say("worker metrics:")
    for ln in lines:
        print("  " + ln)


if __name__ == "__main__":
    main()
