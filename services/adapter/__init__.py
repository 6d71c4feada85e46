"""The adapter worker: consumes events, adapts per user, publishes top-K (faust-streaming)."""

from services.adapter.app import create_app

__all__ = ["create_app"]
