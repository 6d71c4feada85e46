"""1. Adaptation: users/s of the per-user loop and of the batched paths, against the roofline.

Paths, on a MovieLens-100K-sized model (D=16, MLP 64-32, 5 SGD steps, full 64-event buffers):
``loop`` (:func:`metarec.adapt.adapt_loop`, one user at a time with autograd), ``vmap``
(:func:`metarec.adapt.adapt`, the worker's path today) and ``explicit``
(:func:`metarec.fastadapt.adapt_explicit`, hand-written batched gradients, the serving path).
Roofline fraction = users/s x FLOPs of one adaptation / GFLOP/s of a large GEMM in this run.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from bench import common
from metarec.adapt import Support, adapt, adapt_loop
from metarec.fastadapt import adapt_explicit
from metarec.model import ModelConfig, RecModel


def adaptation_flops(cfg: ModelConfig, support: int, steps: int) -> float:
    """FLOPs of one user's adaptation: per event and step, the MLP forward plus the backward
    products that are needed (weight gradients, and input gradients of every layer but the first)."""
    widths = (3 * cfg.dim, *cfg.hidden, 1)
    fwd = sum(a * b for a, b in zip(widths[:-1], widths[1:]))
    bwd_w = fwd
    bwd_in = sum(a * b for a, b in zip(widths[1:-1], widths[2:]))
    return 2.0 * (fwd + bwd_w + bwd_in) * support * steps


def _support(cfg: ModelConfig, b: int, s: int, seed: int) -> Support:
    g = torch.Generator().manual_seed(seed)
    return Support(torch.randint(0, cfg.n_users, (b,), generator=g),
                   torch.randint(1, cfg.n_items, (b, s), generator=g),
                   torch.randint(0, cfg.n_context_buckets, (b, s, cfg.max_context), generator=g),
                   torch.randint(0, 2, (b, s), generator=g).float(), torch.ones(b, s))


def run(quick: bool) -> dict[str, Any]:
    torch.manual_seed(0)
    cfg = ModelConfig(n_users=common.ML_USERS + 1, n_items=common.ML_ITEMS + 1)
    model = RecModel(cfg).eval()
    s, steps, lr = cfg.buffer_size, cfg.inner_steps, cfg.inner_lr
    sizes = [1, 16, 64, 256, 1024] if quick else [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
    rounds = 2 if quick else 5
    loop_users = 8 if quick else 24
    min_s = 0.08 if quick else 0.4
    flops = adaptation_flops(cfg, s, steps)
    sups = {b: _support(cfg, b, s, b) for b in sizes}
    loop_sup = _support(cfg, loop_users, s, 99)
    res: dict[str, dict[int, list[float]]] = {"vmap": {b: [] for b in sizes}, "explicit": {b: [] for b in sizes}}
    loop: list[float] = []
    gemm: list[float] = []
    with torch.no_grad():
        for _ in range(rounds):  # interleaved: every path once per round
            gemm.append(common.gemm_gflops())
            with torch.enable_grad():
                loop.append(loop_users / common.time_call(lambda: adapt_loop(model, loop_sup, steps, lr), 0, 1))
            for b in sizes:
                sup = sups[b]
                res["vmap"][b].append(b / common.time_call(lambda: adapt(model, sup, steps, lr), min_s))
                res["explicit"][b].append(b / common.time_call(lambda: adapt_explicit(model, sup, steps, lr), min_s))
    g = float(np.median(gemm))
    loop_rate = common.median_rate(loop)
    curves = {p: {b: common.median_rate(v) for b, v in r.items()} for p, r in res.items()}
    best = {p: max(c.items(), key=lambda kv: kv[1]) for p, c in curves.items()}
    head_path = max(best, key=lambda p: best[p][1])
    hb, hr = best[head_path]
    out = {
        "model": {"dim": cfg.dim, "hidden": cfg.hidden, "support_events": s, "steps": steps,
                  "n_users": cfg.n_users, "n_items": cfg.n_items},
        "flops_per_adaptation": flops, "gemm_gflops": g, "gemm_gflops_rounds": gemm,
        "loop_users_per_s": loop_rate, "loop_rounds": loop,
        "batched_users_per_s": {p: {str(b): r for b, r in c.items()} for p, c in curves.items()},
        "roofline_fraction": {p: {str(b): r * flops / (g * 1e9) for b, r in c.items()} for p, c in curves.items()},
        "headline": {"path": head_path, "batch": hb, "users_per_s": hr, "speedup_vs_loop": hr / loop_rate,
                     "roofline_fraction": hr * flops / (g * 1e9),
                     "vmap_users_per_s": best["vmap"][1], "vmap_batch": best["vmap"][0],
                     "vmap_speedup_vs_loop": best["vmap"][1] / loop_rate,
                     "vmap_roofline_fraction": best["vmap"][1] * flops / (g * 1e9)},
    }
    _plot(curves, loop_rate, g * 1e9 / flops)
    rows = [[b, curves["vmap"][b], curves["explicit"][b], curves["explicit"][b] / loop_rate,
             curves["explicit"][b] * flops / (g * 1e9)] for b in sizes]
    md = (f"# Adaptation\n\nFLOPs per adaptation {flops / 1e6:.2f} M ({s} events x {steps} steps); "
          f"GEMM roofline {g:.1f} GFLOP/s (1 thread) = {g * 1e9 / flops:,.0f} users/s; "
          f"per-user loop {loop_rate:.1f} users/s.\n\n"
          + common.table(["batch", "vmap users/s", "explicit users/s", "explicit / loop", "explicit roofline"], rows)
          + f"\nBest: {head_path} at batch {hb}: {hr:,.0f} users/s = {hr / loop_rate:.0f}x the loop, "
            f"{hr * flops / (g * 1e9):.0%} of the roofline. ![curve](adapt.png)\n")
    common.write("adapt", out, md)
    return out


def _plot(curves: dict[str, dict[int, float]], loop: float, roof: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for p, c in curves.items():
        ax.plot(list(c), list(c.values()), marker="o", label=f"batched ({p})")
    ax.axhline(loop, color="grey", ls=":", label="per-user loop")
    ax.axhline(roof, color="red", ls="--", label="GEMM roofline")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("users per call")
    ax.set_ylabel("users adapted / s (1 core)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    common.RESULTS.mkdir(parents=True, exist_ok=True)
    fig.savefig(common.RESULTS / "adapt.png", dpi=110)
    plt.close(fig)
