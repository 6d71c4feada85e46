"""5. River ``BiasedMF`` beside metarec on the same event stream: events/s and prequential quality.

The stream is MovieLens-100K (or the simulated log of its size) in time order. Both models
are scored prequentially (predict an event, then learn from it) on the events of the users
metarec held out from meta-training (unknown to its vocabulary: the cold-start case).
River learns online from every event of the stream (its own "meta-training"); metarec
predicts each held-out event from its meta-learned initialization adapted on the user's
previous ≤ ``buffer_size`` events. Quality: RMSE on the target scale (ratings, or 0/1 labels
on simulated data) and AUC (positives: rating ≥ threshold, or clicks).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from bench import common
from metarec import artifact
from metarec.adapt import Support, predict_rows
from metarec.fastadapt import adapt_explicit
from metarec.features import target
from metarec.model import hash_context
from metarec.quality import auc


def _river(evs: list, held: set[str], cfg: Any) -> dict[str, Any]:
    from river import optim, reco

    model = reco.BiasedMF(n_factors=10, bias_optimizer=optim.SGD(0.025), latent_optimizer=optim.SGD(0.05),
                          l2_latent=0.1, latent_initializer=optim.initializers.Normal(mu=0.0, sigma=0.1, seed=73),
                          seed=0)
    ys, ps = [], []
    t0 = time.perf_counter()
    for e in evs:
        y = target(e.kind, e.value, cfg)
        if y is None:
            continue
        p = model.predict_one(e.user_id, e.item_id)
        model.learn_one(e.user_id, e.item_id, y)
        if e.user_id in held:
            ys.append(y)
            ps.append(p)
    dt = time.perf_counter() - t0
    return {"events_per_s": len(evs) / dt, "y": np.array(ys), "p": np.array(ps)}


def _ours(evs: list, held: set[str], bundle: artifact.Bundle, chunk: int = 256) -> dict[str, Any]:
    model, vocab, cfg = bundle.model, bundle.vocab, bundle.model.cfg
    s, f = cfg.buffer_size, cfg.max_context
    t0 = time.perf_counter()
    hist: dict[str, list[tuple[int, list[int], float]]] = {}
    pairs = []  # (user index, support rows, query row)
    for e in evs:
        y = target(e.kind, e.value, cfg)
        if y is None or e.user_id not in held:
            continue
        row = (vocab.item(e.item_id), hash_context(e.context, cfg.n_context_buckets, f), y)
        h = hist.setdefault(e.user_id, [])
        pairs.append((vocab.user(e.user_id), h[-s:], row))
        h.append(row)
    ys, ps = [], []
    with torch.no_grad():
        for lo in range(0, len(pairs), chunk):
            part = pairs[lo:lo + chunk]
            b = len(part)
            items = np.zeros((b, s), np.int64)
            ctx = np.zeros((b, s, f), np.int64)
            yy = np.zeros((b, s), np.float32)
            mask = np.zeros((b, s), np.float32)
            for j, (_, sup, _) in enumerate(part):
                n = len(sup)
                if n:
                    items[j, :n] = [r[0] for r in sup]
                    ctx[j, :n] = [r[1] for r in sup]
                    yy[j, :n] = [r[2] for r in sup]
                    mask[j, :n] = 1.0
            users = torch.tensor([p[0] for p in part])
            sup_t = Support(users, torch.from_numpy(items), torch.from_numpy(ctx), torch.from_numpy(yy),
                            torch.from_numpy(mask))
            fast = adapt_explicit(model, sup_t, cfg.inner_steps, cfg.inner_lr)
            q_items = torch.tensor([[p[2][0]] for p in part])
            q_ctx = torch.tensor([[p[2][1]] for p in part])
            pred = model.predict(predict_rows(model, fast, users, q_items, q_ctx))[:, 0]
            ps += pred.tolist()
            ys += [p[2][2] for p in part]
    dt = time.perf_counter() - t0
    return {"events_per_s": len(pairs) / dt, "y": np.array(ys), "p": np.array(ps), "events": len(pairs)}


def _quality(y: np.ndarray, p: np.ndarray, cfg: Any) -> dict[str, float]:
    pos = y >= cfg.rating_threshold if cfg.mode == "rating" else y > 0.5
    return {"rmse": float(np.sqrt(np.mean((p - y) ** 2))), "auc": auc(pos.astype(float), p), "n": len(y)}


def run(quick: bool, model_dir: Any) -> dict[str, Any]:
    bundle = artifact.load(model_dir)
    cfg = bundle.model.cfg
    evs, source = common.events(30_000 if quick else None)
    known = set(bundle.vocab.users)
    held = {e.user_id for e in evs} - known
    r = _river(evs, held, cfg)
    o = _ours(evs, held, bundle)
    out = {
        "source": source, "stream_events": len(evs), "held_out_users": len(held), "mode": cfg.mode,
        "river_biasedmf": {"events_per_s": r["events_per_s"], **_quality(r["y"], r["p"], cfg),
                           "note": "learn_one + predict_one on every event of the stream, 1 thread"},
        "metarec": {"events_per_s": o["events_per_s"], **_quality(o["y"], o["p"], cfg),
                    "note": "held-out users' events: adapt on the previous <= buffer_size events (batched, "
                            "explicit path) + predict; each event is a full re-adaptation"},
    }
    rows = [[k, v["events_per_s"], v["rmse"], v["auc"], v["n"]] for k, v in
            (("River BiasedMF", out["river_biasedmf"]), ("metarec (adapt + predict)", out["metarec"]))]
    md = (f"# River BiasedMF vs metarec ({source}, {len(evs):,} events, {cfg.mode} mode, prequential on "
          f"{len(held)} held-out users)\n\n" + common.table(["model", "events/s", "RMSE", "AUC", "scored events"], rows)
          + "\nRiver's events/s counts every event of the stream (learn + predict); metarec's counts the "
            "held-out events, each one a full re-adaptation from the initialization on up to "
            f"{cfg.buffer_size} events plus a prediction.\n")
    common.write("river", out, md)
    return out
