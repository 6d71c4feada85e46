"""The worker against the real broker: every user gets recommendations, bad input goes to the
dead-letter topic, and per-user state survives a restart through the changelog."""

from __future__ import annotations

from collections import defaultdict

import pytest

from tests.broker.conftest import WorkerProcess, consume_json, events_of, produce

pytestmark = pytest.mark.kafka


def pick_users(sim_events: list, n_users: int, per_user: int) -> list:
    by_user: dict[str, list] = defaultdict(list)
    for e in sim_events:
        if len(by_user[e.user_id]) < per_user:
            by_user[e.user_id].append(e)
    users = [u for u, evs in by_user.items() if len(evs) == per_user][:n_users]
    chosen = {u for u in users}
    return [e for e in sim_events if e.user_id in chosen and e in by_user[e.user_id]]


def test_every_user_gets_recommendations_excluding_consumed(worker: WorkerProcess, kafka_bootstrap: str,
                                                            worker_env: dict, sim_events: list) -> None:
    evs = pick_users(sim_events, n_users=60, per_user=4)
    users = {e.user_id for e in evs}
    consumed = defaultdict(set)
    for e in evs:
        consumed[e.user_id].add(e.item_id)
    produce(kafka_bootstrap, worker_env["METAREC_TOPIC_EVENTS"], events_of(evs))

    def complete(msgs: list) -> bool:
        return {m["user_id"] for m in msgs if m["events_seen"] == 4} >= users

    msgs = consume_json(kafka_bootstrap, worker_env["METAREC_TOPIC_RECOMMENDATIONS"], complete)
    assert complete(msgs), f"users without a final recommendation: {len(users - {m['user_id'] for m in msgs})}"
    for m in msgs:
        assert set(m) >= {"user_id", "items", "scores", "model_version", "events_seen", "last_event_ts",
                          "emitted_at"}
        assert len(m["items"]) == 10 and len(m["scores"]) == 10
        seen_so_far = {e.item_id for e in evs if e.user_id == m["user_id"] and e.ts <= m["last_event_ts"]}
        assert not set(m["items"]) & seen_so_far, "a consumed item was recommended"
    user = sorted(users)[0]
    status, body = worker.get(f"/users/{user}/recommendations")
    assert status == 200 and body["user_id"] == user and body["events_seen"] == 4
    assert worker.get("/users/nobody-at-all/recommendations")[0] == 404
    assert "metarec_recommendations_emitted_total" in worker.metrics()


def test_malformed_events_go_to_the_dead_letter_topic(worker: WorkerProcess, kafka_bootstrap: str,
                                                      worker_env: dict, sim_events: list) -> None:
    good = pick_users(sim_events, n_users=2, per_user=1)
    bad = [(b"u-x", b"{not json"), (b"u-x", b'{"event_id": "e", "user_id": "u-x"}'),
           (b"u-x", b'{"event_id":"e","user_id":"u-x","item_id":"i","kind":"warp","value":1,"ts":1}'),
           (b"u-x", b'{"event_id":"e","user_id":"u-x","item_id":"i","kind":"click","value":1,"ts":NaN}'),
           (b"u-x", b"x" * 20_000)]
    produce(kafka_bootstrap, worker_env["METAREC_TOPIC_EVENTS"],
            events_of(good[:1]) + bad + events_of(good[1:]))
    dead = consume_json(kafka_bootstrap, worker_env["METAREC_TOPIC_DEAD_LETTER"], lambda m: len(m) >= 5)
    assert sorted(d["reason"] for d in dead) == sorted(
        ["bad_json", "missing_field", "unknown_kind", "bad_json", "oversized"])
    assert all(d["raw_b64"] and d["source"]["topic"] == worker_env["METAREC_TOPIC_EVENTS"] for d in dead)
    recs = consume_json(kafka_bootstrap, worker_env["METAREC_TOPIC_RECOMMENDATIONS"],
                        lambda m: {r["user_id"] for r in m} >= {e.user_id for e in good})
    assert {r["user_id"] for r in recs} >= {e.user_id for e in good}, "valid events around bad ones are processed"
    assert worker.proc is not None and worker.proc.poll() is None, "the worker keeps running"


def test_state_comes_back_from_the_changelog_after_a_restart(worker_env: dict, kafka_bootstrap: str, tmp_path,
                                                             sim_events: list) -> None:
    evs = pick_users(sim_events, n_users=5, per_user=6)
    users = sorted({e.user_id for e in evs})
    before = [e for e in evs if sum(1 for x in evs if x.user_id == e.user_id and x.ts <= e.ts) <= 3]
    after = [e for e in evs if e not in before]
    topic = worker_env["METAREC_TOPIC_RECOMMENDATIONS"]
    # the local data dir is wiped between runs, so the state can only come from the changelog topic
    w = WorkerProcess(worker_env, tmp_path / "worker.log")
    w.start()
    try:
        produce(kafka_bootstrap, worker_env["METAREC_TOPIC_EVENTS"], events_of(before))
        consume_json(kafka_bootstrap, topic, lambda m: {r["user_id"] for r in m if r["events_seen"] == 3} >= set(users))
    finally:
        w.stop()
    produce(kafka_bootstrap, worker_env["METAREC_TOPIC_EVENTS"], events_of(after))
    import shutil

    shutil.rmtree(worker_env["METAREC_DATA_DIR"], ignore_errors=True)
    w.start()
    try:
        msgs = consume_json(kafka_bootstrap, topic,
                            lambda m: {r["user_id"] for r in m if r["events_seen"] == 6} >= set(users))
    finally:
        w.stop()
    final = {r["user_id"]: r["events_seen"] for r in msgs}
    assert all(final[u] == 6 for u in users), f"events_seen after restart: {final}"
