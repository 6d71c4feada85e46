"""MovieLens ratings as ``rate`` events (100K ``u.data``, 1M ``ratings.dat``, 20M+ ``ratings.csv``).

The data's licence forbids redistribution: it is read from where the user keeps it and never
copied. Each rating becomes an event with context taken from its timestamp (hour bucket and
weekday), the only context MovieLens records.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Iterator
from pathlib import Path

from metarec.data.eventlog import DataError
from metarec.events import Event

_FILES = {"ml-100k": "u.data", "ml-1m": "ratings.dat", "ml-csv": "ratings.csv"}


def detect(path: Path) -> str:
    """Which MovieLens layout ``path`` (a folder or a ratings file) holds."""
    for fmt, name in _FILES.items():
        if path.name == name or (path.is_dir() and (path / name).exists()):
            return fmt
    raise DataError(
        f"{path}: not an event log (.jsonl) nor MovieLens (expected u.data, ratings.dat or ratings.csv)"
    )


def ts_context(ts: float) -> dict[str, str]:
    """Context fields derived from a timestamp: a 6-hour bucket and the weekday (UTC)."""
    t = time.gmtime(ts)
    return {"hour": ("night", "morning", "afternoon", "evening")[t.tm_hour // 6], "weekday": str(t.tm_wday)}


def _rows(path: Path, fmt: str) -> Iterator[tuple[str, str, str, str]]:
    if fmt == "ml-100k":
        with open(path, encoding="latin-1") as f:
            for line in f:
                if line.strip():
                    u, i, r, t = line.split("\t")[:4]
                    yield u, i, r, t
    elif fmt == "ml-1m":
        with open(path, encoding="latin-1") as f:
            for line in f:
                if line.strip():
                    u, i, r, t = line.strip().split("::")[:4]
                    yield u, i, r, t
    else:
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None or [h.strip() for h in header[:4]] != ["userId", "movieId", "rating", "timestamp"]:
                raise DataError(f"{path}: expected the header userId,movieId,rating,timestamp")
            for row in reader:
                yield row[0], row[1], row[2], row[3]


def load(path: Path, fmt: str) -> list[Event]:
    """Ratings of a MovieLens folder or ratings file as events (file order)."""
    file = path / _FILES[fmt] if path.is_dir() else path
    if not file.exists():
        raise DataError(f"{file}: no such file")
    events = []
    for n, (u, i, r, t) in enumerate(_rows(file, fmt), 1):
        try:
            rating, ts = float(r), float(t)
        except ValueError:
            raise DataError(f"{file}:{n}: rating {r!r} or timestamp {t!r} is not a number") from None
        events.append(Event(event_id=f"ml-{n}", user_id=u, item_id=i, kind="rate", value=rating,
                            ts=ts, context=ts_context(ts)))
    return events
