"""Online item offsets: global item terms that follow the test stream, on top of any scorer.

The neural models' item embeddings and biases are frozen at the train/test cut, while River's
``BiasedMF`` keeps learning its item biases on every test event. This pass gives any scorer
that lever. In stream (time) order, event ``e`` of item ``i`` with label ``y_e`` is predicted as

    p_e = sigmoid(z_e + g + o[i])          z_e = logit of the base scorer's probability

and only *then* learned from, by one SGD step on its logloss with an L2 penalty
``lam/2 · o[i]²`` on the touched offset (applied lazily, when the item is updated):

    o[i] += eta · (y_e − p_e) − eta · lam · o[i]
    g    += eta_global · (y_e − p_e)

Offsets start at zero at the cut (the base model was fitted up to it). An event's sampled
negatives (columns 1.. of a scores matrix) are scored with the same state — before the event
is learned — and are never learned from. So an event's own label reaches neither its own
prediction nor any earlier one: strictly test-then-train.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from metarec.evaluate.metrics import auc

ONLINE = " + online items"  # suffix of a method's row with the online item offsets
EPS = 1e-7  # probabilities are clipped to [EPS, 1 - EPS] before taking logits


@dataclass(frozen=True)
class OnlineItems:
    """Hyper-parameters of the online item-offset correction (chosen on validation)."""

    eta: float = 0.0  # SGD learning rate of each item's logit offset
    lam: float = 0.0  # L2 weight on an item offset (decay per update: eta * lam)
    eta_global: float = 0.0  # SGD learning rate of one logit offset shared by all items (0 = none)


ETAS = (0.01, 0.03, 0.1, 0.3, 1.0)
LAMS = (0.0, 0.01, 0.1, 0.3, 1.0, 3.0)
ETA_GLOBALS = (0.0, 0.001, 0.003, 0.01, 0.03, 0.1)
MAX_DECAY = 1.0  # eta * lam > 1 would flip an offset's sign at every update: left out of the grid
# the validation grid (180 points); eta = 0 (no item offsets) first, so a tie keeps the plain scorer
GRID = tuple([OnlineItems(0.0, 0.0, eg) for eg in ETA_GLOBALS]
             + [OnlineItems(e, lam, eg) for e in ETAS for lam in LAMS for eg in ETA_GLOBALS
                if e * lam <= MAX_DECAY])
FIELDS = ("eta", "lam", "eta_global")


def with_online(name: str) -> str:
    """The row name of ``name`` with online item offsets."""
    return name + ONLINE


def is_online(name: str) -> bool:
    return name.endswith(ONLINE)


def logit(p: np.ndarray) -> np.ndarray:
    """``log(p / (1 − p))`` of probabilities clipped to ``[EPS, 1 − EPS]``."""
    q = np.clip(np.asarray(p, np.float64), EPS, 1.0 - EPS)
    return np.log(q) - np.log1p(-q)


def _sigmoid(x: float) -> float:
    return 0.5 * (1.0 + math.tanh(0.5 * x))  # overflow-free


def online_items(p: np.ndarray, items: np.ndarray, y: np.ndarray, cfg: OnlineItems) -> np.ndarray:
    """Probabilities ``(E, K)`` of the base scorer's ``p (E, K)`` corrected by online item offsets.

    Rows are events in stream order; column 0 is the event's item (``items (E, K)`` item codes
    ≥ 0, its label ``y (E,)``), columns 1.. are items scored alongside it (negatives). An entry
    whose offset is exactly zero keeps the base probability bit for bit.
    """
    p = np.asarray(p, np.float64)
    items = np.asarray(items, np.int64)
    if p.shape != items.shape or p.ndim != 2 or len(y) != len(p):
        raise ValueError(f"online_items: p {p.shape}, items {items.shape} and y ({len(y)},) disagree")
    if len(p) == 0:
        return p.copy()
    z = logit(p)
    o = np.zeros(int(items.max()) + 1)
    off = np.zeros_like(p)  # (E, K) the offset each entry was predicted with
    g = 0.0
    wide = p.shape[1] > 1
    first, z0, yy = items[:, 0].tolist(), z[:, 0].tolist(), np.asarray(y, np.float64).tolist()
    for e in range(len(p)):
        i = first[e]
        oi = float(o[i])
        if wide:
            off[e] = g + o[items[e]]  # state before event e is learned
        else:
            off[e, 0] = g + oi
        err = yy[e] - _sigmoid(z0[e] + g + oi)  # predict first ...
        o[i] = oi + cfg.eta * err - cfg.eta * cfg.lam * oi  # ... then learn
        g += cfg.eta_global * err
    return np.where(off == 0.0, p, 1.0 / (1.0 + np.exp(-(z + off))))


def choose(p: np.ndarray, items: np.ndarray, y: np.ndarray,
           grid: tuple[OnlineItems, ...] = GRID) -> dict[str, Any]:
    """The grid point with the highest AUC over a validation stream (``p, items (E, K)``, ``y (E,)``).

    Returns its fields plus ``val_auc`` (with the offsets), ``val_auc_base`` (without) and
    ``profile``: per field, each grid value with the best AUC over the other fields (to see
    whether the choice is interior). Ties keep the earlier grid point, so the plain scorer wins a tie.
    """
    base = auc(y, np.asarray(p)[:, 0])
    aucs = [auc(y, online_items(p, items, y, cfg)[:, 0]) for cfg in grid]
    best, best_auc = grid[0], -np.inf
    for cfg, a in zip(grid, aucs):
        if a > best_auc:
            best, best_auc = cfg, a
    profile = {f: " ".join(f"{v:g}: {max(a for c, a in zip(grid, aucs) if getattr(c, f) == v):.4f}"
                           for v in sorted({getattr(c, f) for c in grid}))
               for f in FIELDS}
    return {**asdict(best), "val_auc": float(best_auc), "val_auc_base": float(base), "profile": profile}


def config(chosen: dict[str, Any]) -> OnlineItems:
    """The :class:`OnlineItems` of a :func:`choose` result."""
    return OnlineItems(float(chosen["eta"]), float(chosen["lam"]), float(chosen["eta_global"]))


def add_online(scores: dict[str, tuple[str, np.ndarray]], chosen: dict[str, dict[str, Any]],
               items: np.ndarray, y: np.ndarray) -> dict[str, tuple[str, np.ndarray]]:
    """``scores`` (name → (kind, (E, K) probabilities)) with a ``"<name> + online items"`` row
    after every name in ``chosen`` (name → :func:`choose` result), of the same kind."""
    out: dict[str, tuple[str, np.ndarray]] = {}
    for name, (kind, s) in scores.items():
        out[name] = (kind, s)
        if name in chosen:
            out[with_online(name)] = (kind, online_items(s, items, y, config(chosen[name])))
    return out
