"""One worker, a catalog of two domains, the real broker: a user known in books arrives in music."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from metarec import artifact
from metarec.events import new_event
from tests.broker.conftest import WorkerProcess, consume_json, events_of, produce

pytestmark = pytest.mark.kafka


@pytest.fixture
def domain_worker(worker_env: dict[str, str], domain_model_dir: Path, tmp_path: Path) -> Iterator[WorkerProcess]:
    w = WorkerProcess({**worker_env, "METAREC_MODEL_DIR": str(domain_model_dir)}, tmp_path / "worker.log")
    w.start()
    try:
        yield w
    finally:
        w.stop()


def test_a_user_who_moves_to_another_domain_gets_its_top_k_from_their_first_event_there(
        domain_worker: WorkerProcess, worker_env: dict[str, str], kafka_bootstrap: str,
        domain_model_dir: Path) -> None:
    vocab = artifact.load(domain_model_dir).vocab
    books = [i for i in vocab.items if vocab.domain_of(i) == "books"]
    music = [i for i in vocab.items if vocab.domain_of(i) == "music"]
    user, topic = "mover", worker_env["METAREC_TOPIC_RECOMMENDATIONS"]
    history = [new_event(user, books[k], "click" if k % 2 else "view", float(k % 2), 1000.0 + k, domain="books")
               for k in range(5)]
    produce(kafka_bootstrap, worker_env["METAREC_TOPIC_EVENTS"], events_of(history))

    def at(n: int, domain: str, msgs: list) -> list:
        return [m for m in msgs if m["user_id"] == user and m["events_seen"] == n and m.get("domain", "") == domain]

    msgs = consume_json(kafka_bootstrap, topic, lambda ms: at(5, "books", ms) and at(5, "music", ms))
    assert at(5, "books", msgs) and at(5, "music", msgs), "after books events: a top-K in each domain"
    for m in msgs:
        assert m["domain"] in ("books", "music") and len(m["items"]) == 10
        assert all(vocab.domain_of(i) == m["domain"] for i in m["items"]), "only the domain's own items"
    before = at(5, "music", msgs)[-1]
    first = next(i for i in reversed(music) if i not in before["items"])  # so any change is the adaptation's
    produce(kafka_bootstrap, worker_env["METAREC_TOPIC_EVENTS"],
            events_of([new_event(user, first, "click", 1.0, 2000.0, domain="music")]))
    msgs = consume_json(kafka_bootstrap, topic, lambda ms: at(6, "music", ms))
    after = at(6, "music", msgs)[-1]
    assert set(after["items"]) != set(before["items"]), "the first music event moved the music top-K"
    assert first not in after["items"], "the consumed item is not recommended back"
    status, body = domain_worker.get(f"/users/{user}/recommendations?domain=music")
    assert status == 200 and body["domain"] == "music" and body["events_seen"] == 6
    assert body["items"] == after["items"]
    status, body = domain_worker.get(f"/users/{user}/recommendations?domain=films")
    assert status == 404 and "not served" in body["error"]
