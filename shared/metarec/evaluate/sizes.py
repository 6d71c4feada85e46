"""Test-time settings re-chosen for each support size of the MAE-by-support curve.

The curve cuts new users' supports to ``k`` events (1, 3, 5, 10, 20). Settings chosen for the
whole state (supports of 3–90 events) over-adapt on one event: `fine-tuned` chose 10 steps at
learning rate 0.1 and reaches MAE 1.0 at k = 1, worse than no adaptation (0.84). So every family
gets the same care at every size, on the validation users with at least ``k`` events (supports
cut to ``k``): the fine-tuning grid for `fine-tuned`, the test-time step multiple for each meta
algorithm, the centre and λ's of the item-offset baseline. Trained models are unchanged (and
cached); only test-time settings move.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from metarec.evaluate import methods as M
from metarec.evaluate.melu_tasks import ADAPT_MULTS, SUPPORT_SIZES, Predict, long_supports, neural, score
from metarec.evaluate.models import OFFSET_CENTERS
from metarec.evaluate.search import LOSSES
from metarec.evaluate.splits import melu_split

if TYPE_CHECKING:
    from metarec.evaluate.melu import Melu


def by_size(ev: Melu, chosen: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{str(k): {"finetune", "meta", "item_offset", "val_users"}}``: ``chosen``'s test-time
    settings re-chosen on validation supports of ``k`` events (overrides for ``Melu.predicts``)."""
    split = melu_split(ev.r, ev.seed)
    steps = ev.plan.meta_steps
    g = ev.train_global(split, chosen["global"], steps, ev.seed)
    models = {a: ev.train_meta(split, p, steps, ev.seed) for a, p in chosen["meta"].items()}
    offsets: list[dict[str, Any]] = [{"center": c, "lam_item": li, "lam_user": lu}
               for c in OFFSET_CENTERS for li in M.LAMBDAS for lu in M.LAMBDAS]
    out = {}
    for k in SUPPORT_SIZES:
        val = long_supports(split.val, k)

        def mae(predict: Predict, k: int = k, val: Any = val) -> float:
            return float(score(ev.r, split, val, predict, k).get("mae", np.inf))

        ft = min(M.ft_grid(losses=LOSSES),
                 key=lambda f: mae(neural(g, f["ft_steps"], f["ft_lr"], f["ft_adapt"], f["ft_loss"])))
        meta = {}
        for a, p in chosen["meta"].items():
            model, inner = models[a], int(p["inner_steps"])
            maes = {m: mae(neural(model, inner * m, model.inner_lr_map())) for m in ADAPT_MULTS}
            meta[a] = {**p, "adapt_mult": min(maes, key=lambda m: maes[m])}
        offset = min(offsets, key=lambda o: mae(ev.offset_predict(split, **o)))
        out[str(k)] = {"finetune": ft, "meta": meta, "item_offset": offset, "val_users": len(val)}
        ev.tick(f"support size {k}: test-time settings chosen on {len(val)} validation users")
    return out
