"""Event sources: the JSONL event log, the seeded simulator, and MovieLens."""

from __future__ import annotations

from metarec.data.eventlog import load_events, read_jsonl, write_jsonl

__all__ = ["load_events", "read_jsonl", "write_jsonl"]
