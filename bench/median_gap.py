"""Diagnosis: why one to three events lose to the item median on MovieLens-1M (issue 12).

``python bench/median_gap.py [--seeds 0 1 2] [--steps 6000]``. MAE is minimized by the median of
the ratings, squared error by their mean; on 1–5 star ratings the two differ. This prints, on the
validation users of the MeLU split with at least 20 support events (validation only: no test
figure decides anything here), at k = 1 support event:

1. the MAE of predicting each item's (shrunk) training **mean** against its training **median**,
   with no user offset (``lam_user`` huge): how much the centre alone is worth;
2. for the first seed, the global model (the evaluation's network, lr 3e-3, wd 1e-4, user dropout
   0.5) trained with each rating loss (``mse``, ``l1``, ``huber``), un-adapted at k = 1, and fine-
   tuned on full supports (10 huber steps at lr 0.1), every 2,000 minibatches (checks of one run each).

Needs ``../shared/data/ml-1m``. Part 1 takes seconds; part 2 about a minute per loss and check
on 2 cores.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from metarec.evaluate.data import load_ratings  # noqa: E402
from metarec.evaluate.melu_tasks import long_supports, neural, score  # noqa: E402
from metarec.evaluate.models import ItemOffset, Net, fill_unseen_items, fit_global, make_model  # noqa: E402
from metarec.evaluate.splits import melu_split  # noqa: E402
from metarec.model import RATING_LOSSES  # noqa: E402
from metarec.stopping import EarlyStopping  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-1m"


def centres(r, seed: int) -> str:  # type: ignore[no-untyped-def]
    split = melu_split(r, seed)
    rows, val = split.train_rows(), long_supports(split.val, 20)
    out = []
    for centre in ("mean", "median"):
        for lam in (3.0, 10.0, 30.0):
            fit = ItemOffset.fit(r.item[rows] + 1, r.value[rows].astype(np.float64), len(r.items) + 1, lam, centre)
            mae = score(r, split, val, lambda s, q, f=fit: f.predict(s, q, 1e9, *r.rating_range), 1)["mae"]
            out.append(f"{centre} (lam {lam:g}) {mae:.4f}")
    return f"seed {seed}, {len(val)} users, k = 1: " + ", ".join(out)


def losses(r, seed: int, steps: int) -> None:  # type: ignore[no-untyped-def]
    split = melu_split(r, seed)
    rows, val = split.train_rows(), long_supports(split.val, 20)
    seen = np.unique(r.item[rows])
    for loss in RATING_LOSSES:
        def check(model: torch.nn.Module, loss: str = loss) -> float:
            m = copy.deepcopy(model)
            fill_unseen_items(m, seen)  # type: ignore[arg-type]
            k1 = score(r, split, val, neural(m, 0, 0.0), 1)["mae"]  # type: ignore[arg-type]
            ft = score(r, split, split.val, neural(m, 10, 0.1, "layers+out", "huber"))["mae"]  # type: ignore[arg-type]
            print(f"global trained with {loss}, check {len(stop.curve) + 1}: un-adapted k=1 {k1:.4f}, "
                  f"fine-tuned full supports {ft:.4f}", flush=True)
            return ft

        stop = EarlyStopping(check, every=2000, patience=max(1, steps))
        model = make_model(r, split.n_known_users, "rating", "layers+out", 0, 0.0, Net(), seed, rating_loss=loss)
        fit_global(model, r, rows, split.user_index[r.user], r.value, steps, 3e-3, 1e-4, 0.5, seed, stop=stop)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=6000)
    args = ap.parse_args()
    if not DATA.exists():
        raise SystemExit(f"needs {DATA} (MovieLens-1M is not redistributed with metarec)")
    torch.set_num_threads(2)
    r = load_ratings(DATA, "ml-1m")
    for seed in args.seeds:
        print(centres(r, seed), flush=True)
    if args.steps > 0:
        losses(r, args.seeds[0], args.steps)


if __name__ == "__main__":
    main()
