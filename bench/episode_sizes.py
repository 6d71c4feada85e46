"""Ablation: the support sizes of meta-training episodes, Meta-SGD on MovieLens-1M (issue 12).

``python bench/episode_sizes.py [--variant before|log|mixed|shrink ...] [--seed 0]``. For each
variant, Meta-SGD (the configuration ML-1M's evaluation chose: from the global model, 5 inner mse
steps, huber outer loss, init loss weight 1) is meta-trained on the MeLU split's training users
with early stopping on its validation users, as ``metarec evaluate`` does, then scored on the
validation users with at least 20 support events, supports cut to k = 1, 3, 5, 10, 20 (the test
step multiple chosen per k on the validation users with >= k events, as the evaluation does),
beside the item-offset baseline with its settings chosen per k the same way. Validation users
only: no test figure decides anything here.

Variants (the episode's support-size draw, out of the user's events minus the query):
- ``before``: all of them half the time, else uniform over 1..all (then cut to the buffer);
- ``log``: all half the time, else log-uniform over 1..buffer;
- ``mixed``: :func:`metarec.evaluate.melu_tasks.support_size` (all half, uniform a quarter,
  log-uniform a quarter): what the evaluation uses;
- ``shrink``: ``log`` plus a size-aware inner rate, each step scaled by ``n / (n + kappa)``
  (``n`` support events, ``kappa`` meta-learned): a prototype, patched in here only; not kept.

Needs ``../shared/data/ml-1m``. Each variant trains for 2-7 minutes on 2 cores. Prints one line
per size and a JSON summary per variant.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from metarec.evaluate import melu_tasks as T  # noqa: E402
from metarec.evaluate import methods as M  # noqa: E402
from metarec.evaluate.data import load_ratings  # noqa: E402
from metarec.evaluate.melu import Melu  # noqa: E402
from metarec.evaluate.models import Net  # noqa: E402
from metarec.evaluate.splits import melu_split  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-1m"
PARAMS = {"adapt": "layers+out", "algorithm": "metasgd", "init_loss_weight": 1.0, "inner_lr": 0.05,
          "inner_steps": 5, "loss": "mse", "outer_loss": "huber", "outer_lr": 0.003, "init": "global"}


def before(n: int, buffer: int, rng: np.random.Generator) -> int:
    """The draw episodes used before: all half the time, else uniform over all (then the buffer)."""
    return min(n if rng.random() < 0.5 else int(rng.integers(1, n + 1)), buffer)


SIZES: dict[str, T.SupportSize] = {
    "before": before,
    "log": functools.partial(T.support_size, shares=(0.5, 0.0, 0.5)),
    "mixed": T.support_size,
    "shrink": functools.partial(T.support_size, shares=(0.5, 0.0, 0.5)),
}


def patch_size_aware_rates(kappa0: float = 1.0) -> None:
    """The ``shrink`` prototype: a meta-learned ``log_kappa`` on the model, and every inner step
    scaled by ``n / (n + kappa)`` for a support of ``n`` events (patched into training and scoring)."""
    from torch.func import grad, vmap

    import metarec.adapt as A
    import metarec.evaluate.models as EM
    import metarec.meta as MM

    made = M.meta_model

    def meta_model(*a: Any, **kw: Any) -> Any:
        m = made(*a, **kw)
        m.register_parameter("log_kappa", torch.nn.Parameter(torch.tensor(float(np.log(kappa0)))))
        return m

    def adapt(model: Any, support: Any, steps: int, lr: Any, fast0: Any = None, first_order: bool = False,
              loss: Any = None) -> Any:
        init = fast0 if fast0 is not None else model.fast_init()
        slow = {n: p for n, p in model.named_parameters() if n not in init}
        kappa = dict(model.named_parameters()).get("log_kappa")

        def one_user(fast: Any, user: Any, items: Any, ctx: Any, y: Any, mask: Any) -> Any:
            n = mask.sum()
            scale = n / (n + kappa.exp()) if kappa is not None else 1.0
            for _ in range(steps):
                g = grad(lambda f: A.user_loss(model, slow, f, user, items, ctx, y, mask, loss))(fast)
                if first_order:
                    g = {k: v.detach() for k, v in g.items()}
                fast = {k: fast[k] - scale * A._lr_of(lr, k) * g[k] for k in fast}
            return fast

        if steps == 0:
            return {k: v.unsqueeze(0).expand(len(support), *v.shape) for k, v in init.items()}
        return vmap(one_user, in_dims=(None, 0, 0, 0, 0, 0))(init, support.users, support.items, support.ctx,
                                                              support.y, support.mask)

    M.meta_model = meta_model  # type: ignore[assignment]
    A.adapt = MM.adapt = EM.adapt = adapt  # type: ignore[assignment]


def run(variant: str, seed: int) -> dict[str, Any]:
    torch.set_num_threads(2)
    r = load_ratings(DATA, "ml-1m")
    plan = M.Plan.for_budget(20.0, 3).early_stopped()
    net = Net()
    ev = Melu(r, seed, plan, net, lambda s: print(s, flush=True))
    split = melu_split(r, seed)
    g = ev.train_global(split, {**M.DEFAULT_GLOBAL, "loss": "mse"}, ev.plan.meta_steps, seed)
    if variant == "shrink":
        patch_size_aware_rates()
    users = np.array(sorted(split.train), np.int64)
    seen = np.unique(r.item[split.train_rows()])
    stop = T.stopper(r, split, seen, plan.check_every(len(split.train)), plan.patience, int(PARAMS["inner_steps"]))
    t0 = time.monotonic()
    model = M.train_meta(r, split.n_known_users, "rating", PARAMS, net, plan, ev.plan.meta_steps, users,
                         T.sampler(r, split, net.buffer, 10, plan.user_dropout, SIZES[variant]), None, seed, seen, copy.deepcopy(g), stop)
    out: dict[str, Any] = {"variant": variant, "seed": seed, "train_s": round(time.monotonic() - t0),
                           "steps_run": stop.summary()["steps_run"], "best_step": stop.best_step,
                           "val_mae_full": round(stop.best_value, 4), "by_k": {}}
    if variant == "shrink":
        out["kappa"] = round(float(model.log_kappa.detach().exp()), 2)
    sub = T.long_supports(split.val, 20)
    for k in T.SUPPORT_SIZES:
        vk = T.long_supports(split.val, k)
        mult, _ = ev.adapted_mae(split, model, PARAMS, vk, k)
        meta = ev.val_mae(split, T.neural(model, int(PARAMS["inner_steps"]) * mult, model.inner_lr_map()), sub, k)
        init = ev.val_mae(split, T.neural(model, 0, 0.0), sub, k)
        grid = ev.offset_grid(split, vk, k)
        c, li, lu = min(grid, key=lambda key: grid[key])
        io = ev.val_mae(split, ev.offset_predict(split, c, li, lu), sub, k)
        out["by_k"][str(k)] = {"mult": mult, "meta": round(meta, 4), "init": round(init, 4), "item_offset": round(io, 4)}
        print(f"{variant} k={k}: Meta-SGD {meta:.4f} (x{mult} steps), its init {init:.4f}, item offset {io:.4f}",
              flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", nargs="+", default=["before", "log", "mixed", "shrink"],
                    choices=["before", "log", "mixed", "shrink"])
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if not DATA.is_dir():
        print(f"episode_sizes: {DATA} is absent (MovieLens-1M is not redistributed)", file=sys.stderr)
        return 2
    for v in a.variant:  # one process per variant keeps the shrink patch out of the others
        if len(a.variant) > 1:
            import subprocess

            subprocess.run([sys.executable, __file__, "--variant", v, "--seed", str(a.seed)], check=True)
            continue
        print(json.dumps(run(v, a.seed)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
