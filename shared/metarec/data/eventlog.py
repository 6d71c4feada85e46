"""The event log: one JSON event per line (optionally gzipped), and a loader for any source."""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from metarec.errors import DataError
from metarec.events import Event, Invalid, decode, encode

__all__ = ["DataError", "FORMATS", "load_events", "read_jsonl", "write_jsonl"]


def _open(path: Path, mode: str) -> IO[bytes]:
    if path.suffix == ".gz":
        return gzip.open(path, mode + "b")  # type: ignore[return-value]
    return open(path, mode + "b")


def write_jsonl(events: Iterable[Event], path: Path) -> int:
    """Write events one per line; returns how many."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with _open(path, "w") as f:
        for ev in events:
            f.write(encode(ev) + b"\n")
            n += 1
    return n


def read_jsonl(path: Path, strict: bool = True) -> Iterator[Event]:
    """Events of a JSONL log. With ``strict`` a bad line raises :class:`DataError`, else it is skipped."""
    with _open(path, "r") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            ev = decode(line.rstrip(b"\n"))
            if isinstance(ev, Invalid):
                if strict:
                    raise DataError(f"{path}:{lineno}: {ev.reason}: {ev.detail}")
                continue
            yield ev


FORMATS = ("auto", "jsonl", "ml-100k", "ml-1m", "ml-csv")


def load_events(path: Path, fmt: str = "auto") -> list[Event]:
    """Every event of ``path`` in time order. ``fmt`` is one of :data:`FORMATS`.

    ``auto`` reads a ``.jsonl[.gz]`` event log, or MovieLens given its folder or its ratings
    file (100K ``u.data``, 1M ``ratings.dat``, 20M/25M/32M ``ratings.csv``).
    """
    from metarec.data import movielens

    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if fmt not in FORMATS:
        raise DataError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if fmt == "auto":
        fmt = "jsonl" if path.is_file() and ".jsonl" in path.name else movielens.detect(path)
    events = list(read_jsonl(path)) if fmt == "jsonl" else movielens.load(path, fmt)
    events.sort(key=lambda e: e.ts)
    return events
