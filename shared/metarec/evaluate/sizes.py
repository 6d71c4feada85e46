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

from metarec.evaluate.melu_tasks import SUPPORT_SIZES, long_supports

if TYPE_CHECKING:
    from metarec.evaluate.melu import Melu


def by_size(ev: Melu, chosen: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{str(k): {"finetune", "meta", "item_offset", "val_users"}}``: ``chosen``'s test-time
    settings re-chosen on validation supports of ``k`` events (overrides for ``Melu.predicts``),
    by the same searches the whole state's settings come from."""
    split = ev.split(ev.seed)
    steps = ev.plan.meta_steps
    g = ev.train_global(split, chosen["global"], steps, ev.seed)
    models = {a: ev.train_meta(split, p, steps, ev.seed) for a, p in chosen["meta"].items()}
    out = {}
    for k in SUPPORT_SIZES:
        val = long_supports(split.val, k)
        ft, _ = ev.best_finetune(split, g, val, k)
        meta = {a: {**p, "adapt_mult": ev.adapted_mae(split, models[a], p, val, k)[0]}
                for a, p in chosen["meta"].items()}
        grid = ev.offset_grid(split, val, k)
        c, li, lu = min(grid, key=lambda key: grid[key])
        out[str(k)] = {"finetune": ft, "meta": meta, "item_offset": {"center": c, "lam_item": li, "lam_user": lu},
                       "val_users": len(val)}
        ev.tick(f"support size {k}: test-time settings chosen on {len(val)} validation users")
    return out
