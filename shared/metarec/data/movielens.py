"""MovieLens ratings as ``rate`` events (100K ``u.data``, 1M ``ratings.dat``, 20M+ ``ratings.csv``),
and the user and movie attributes of 100K (``u.user``, ``u.item``) and 1M (``users.dat``, ``movies.dat``).

The data's licence forbids redistribution: it is read from where the user keeps it and never
copied. Each rating becomes an event with context taken from its timestamp (hour bucket and
weekday), the only context MovieLens records.
"""

from __future__ import annotations

import csv
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
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
    profiles = profile_context(file.parent, fmt)
    events = []
    for n, (u, i, r, t) in enumerate(_rows(file, fmt), 1):
        try:
            rating, ts = float(r), float(t)
        except ValueError:
            raise DataError(f"{file}:{n}: rating {r!r} or timestamp {t!r} is not a number") from None
        events.append(Event(event_id=f"ml-{n}", user_id=u, item_id=i, kind="rate", value=rating,
                            ts=ts, context={**ts_context(ts), **profiles.get(u, {})}))
    return events


def profile_context(folder: Path, fmt: str) -> dict[str, dict[str, str]]:
    """Each user's profile as context fields (``u.gender``, ``u.age``, ``u.occupation``, ``u.zip``)
    when the folder has the users file, else none: the user attributes travel on the events, the
    same fields the evaluation's models are trained with (:mod:`metarec.evaluate.data`)."""
    if fmt not in ("ml-100k", "ml-1m") or not (folder / ("u.user" if fmt == "ml-100k" else "users.dat")).exists():
        return {}
    return {u: {f"u.{k}": v for k, v in attrs.items()} for u, attrs in user_attributes(folder, fmt).items()}


# --- attributes (users: gender, age, occupation, zip; items: release year, genres) -----------

_AGE_EDGES = (18, 25, 35, 45, 50, 56)  # MovieLens-1M's age groups: <18, 18-24, ..., 56+


@dataclass(frozen=True)
class ItemInfo:
    """What MovieLens knows about a movie besides its ratings."""

    year: int | None  # release year (None when the file gives none)
    genres: tuple[str, ...]


def age_group(age: int) -> str:
    """An age in years → MovieLens-1M's age-group code (``"1"``, ``"18"``, ..., ``"56"``)."""
    group = 1
    for edge in _AGE_EDGES:
        if age >= edge:
            group = edge
    return str(group)


def _lines(file: Path, sep: str) -> Iterator[tuple[int, list[str]]]:
    if not file.exists():
        raise DataError(f"{file}: no such file")
    with open(file, encoding="latin-1") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                yield n, line.rstrip("\r\n").split(sep)


def user_attributes(folder: Path, fmt: str) -> dict[str, dict[str, str]]:
    """``{user_id: {"gender", "age", "occupation", "zip"}}`` from ``u.user`` or ``users.dat``.

    Ages are MovieLens-1M's age groups in both layouts; ``zip`` keeps the first two digits.
    """
    out: dict[str, dict[str, str]] = {}
    if fmt == "ml-100k":
        for n, f in _lines(folder / "u.user", "|"):
            if len(f) < 5 or not f[1].isdigit():
                raise DataError(f"{folder / 'u.user'}:{n}: expected id|age|gender|occupation|zip")
            out[f[0]] = {"gender": f[2], "age": age_group(int(f[1])), "occupation": f[3], "zip": f[4][:2]}
    elif fmt == "ml-1m":
        for n, f in _lines(folder / "users.dat", "::"):
            if len(f) < 5:
                raise DataError(f"{folder / 'users.dat'}:{n}: expected UserID::Gender::Age::Occupation::Zip-code")
            out[f[0]] = {"gender": f[1], "age": f[2], "occupation": f[3], "zip": f[4][:2]}
    else:
        raise DataError(f"no user attributes for format {fmt!r}")
    return out


def item_attributes(folder: Path, fmt: str) -> dict[str, ItemInfo]:
    """``{item_id: ItemInfo}`` from ``u.item`` (+ ``u.genre``) or ``movies.dat``."""
    out: dict[str, ItemInfo] = {}
    if fmt == "ml-100k":
        names = [f[0] for _, f in _lines(folder / "u.genre", "|")]
        for n, f in _lines(folder / "u.item", "|"):
            if len(f) < 5 + len(names):
                raise DataError(f"{folder / 'u.item'}:{n}: expected {5 + len(names)} '|'-separated fields")
            m = re.search(r"(\d{4})\s*$", f[2])
            flags = f[5:5 + len(names)]
            out[f[0]] = ItemInfo(int(m.group(1)) if m else None,
                                 tuple(g for g, x in zip(names, flags) if x.strip() == "1"))
    elif fmt == "ml-1m":
        for n, f in _lines(folder / "movies.dat", "::"):
            if len(f) < 3:
                raise DataError(f"{folder / 'movies.dat'}:{n}: expected MovieID::Title (Year)::Genres")
            m = re.search(r"\((\d{4})\)\s*$", f[1])
            out[f[0]] = ItemInfo(int(m.group(1)) if m else None, tuple(g for g in f[2].split("|") if g))
    else:
        raise DataError(f"no item attributes for format {fmt!r}")
    return out
