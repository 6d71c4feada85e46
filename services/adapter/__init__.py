"""The adapter worker: consumes events, adapts per user, publishes top-K (faust-streaming).

The package itself imports nothing heavy: the compute child (:mod:`services.adapter.compute`,
:mod:`services.adapter.engine`) is spawned by importing its modules by reference, and importing
faust and the worker's app here cost it ~2-3 s before it even started loading torch (a SIGKILL's
replacement waits for that child before its first recommendation). ``create_app`` is imported
on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from services.adapter.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from services.adapter.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
