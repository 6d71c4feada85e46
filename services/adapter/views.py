"""The worker's HTTP side: ``/metrics``, a user's latest recommendation and adapted ONNX model.

The recommendation view answers from :class:`Latest` (the last recommendation sent per user),
else computes one from the stored state; both views are table routes, so a request that reaches
the worker not holding the user's partition is forwarded to the one that does.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import msgspec
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from metarec.recommendation import Recommendation

if TYPE_CHECKING:
    from services.adapter.app import Adapter

_ENCODE = msgspec.json.Encoder()


def as_json(rec: Recommendation) -> bytes:
    return _ENCODE.encode(rec)


class Latest:
    """The last recommendation per user and domain, the ``size`` most recently updated (an LRU)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._recs: OrderedDict[tuple[str, str], Recommendation] = OrderedDict()
        self._last: dict[str, str] = {}  # user → the domain recommended last (its entry is the user's newest)

    def get(self, user_id: str, domain: str | None = None) -> Recommendation | None:
        """The newest for ``user_id`` in ``domain`` (None: in whichever domain was recommended last)."""
        if domain is None:
            domain = self._last.get(user_id)
        return None if domain is None else self._recs.get((user_id, domain))

    def remember(self, rec: Recommendation) -> None:
        key = (rec.user_id, rec.domain)
        self._recs[key] = rec
        self._recs.move_to_end(key)
        self._last[rec.user_id] = rec.domain
        while len(self._recs) > self.size:
            (user, dom), _ = self._recs.popitem(last=False)
            if self._last.get(user) == dom:  # the user's newest goes: their older ones went before it
                del self._last[user]


def add_routes(adapter: Adapter) -> None:
    app = adapter.app

    @app.page("/metrics")
    async def metrics(web: Any, request: Request) -> Response:
        ctype = CONTENT_TYPE_LATEST.split("; charset")[0]  # aiohttp takes the charset separately
        return web.bytes(generate_latest(adapter.metrics.registry), content_type=ctype)

    @app.page("/users/{user_id}/recommendations")
    class UserRecs(View):
        @app.table_route(table=adapter.table, match_info="user_id")  # type: ignore[arg-type]
        async def get(self, request: Request, user_id: str) -> Response:
            domain = request.query.get("domain")  # absent: the newest, or the first served domain
            rec = adapter.latest.get(user_id, domain)
            if rec is None:
                raw = adapter.store.stored(user_id.encode())
                if raw is None:
                    return self.json({"error": f"no events seen for user {user_id!r}"}, status=404)
                try:
                    rec = await adapter.compute.one(raw, domain)
                except ValueError as exc:  # a domain this worker does not serve
                    return self.json({"error": str(exc)}, status=404)
                adapter.latest.remember(rec)
            return self.bytes(as_json(rec), content_type="application/json")

    @app.page("/users/{user_id}/model.onnx")
    class UserModel(View):
        @app.table_route(table=adapter.table, match_info="user_id")  # type: ignore[arg-type]
        async def get(self, request: Request, user_id: str) -> Response:
            raw = adapter.store.stored(user_id.encode())
            if raw is None:
                return self.json({"error": f"no events seen for user {user_id!r}"}, status=404)
            data, seconds = await adapter.compute.export(raw)
            adapter.metrics.export_seconds.observe(seconds)
            return self.bytes(data, content_type="application/octet-stream")
