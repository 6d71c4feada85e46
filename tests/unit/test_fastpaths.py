"""Every fast path against the simple one it replaces.

- batched adaptation (``vmap``, and the explicit-gradient serving path, metarec.fastadapt)
  equals the per-user autograd loop, user by user, padding included;
- coalescing several events of a user into one adaptation equals adapting after each event
  (the last recommendation is the same list with scores within 1e-5);
- the onnxruntime scorer equals the torch scorer, over the full catalog and over candidates;
- top-K by argpartition equals a full sort with consumed items excluded.

Tolerances: 1e-5 absolute on float32 weights and scores (the paths differ only in summation order).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from metarec.adapt import Support, adapt, adapt_loop
from metarec.artifact import Bundle, export_onnx
from metarec.candidates import CandidateIndex, item_neighbours
from metarec.events import new_event
from metarec.fastadapt import adapt_explicit
from metarec.model import ModelConfig, RecModel, Vocab
from metarec.pipeline import Pending
from metarec.recommend import Recommender
from metarec.score import (
    OnnxCandidateScorer,
    OnnxScorer,
    TorchCandidateScorer,
    TorchScorer,
    top_k,
    top_k_items,
)
from metarec.state import step

ROOT = Path(__file__).resolve().parents[2]
TOL = 1e-5


def _model(mode: str = "binary", seed: int = 0, **kw: object) -> RecModel:
    torch.manual_seed(seed)
    return RecModel(ModelConfig(n_users=30, n_items=60, dim=8, hidden=(16, 8), mode=mode, **kw)).eval()  # type: ignore[arg-type]


def _support(model: RecModel, b: int = 7, s: int = 12, seed: int = 1) -> Support:
    g = torch.Generator().manual_seed(seed)
    cfg = model.cfg
    lengths = torch.tensor([0, 1, s, 3, s // 2, s, 5][:b])  # ragged, one empty user
    mask = (torch.arange(s)[None, :] < lengths[:, None]).float()
    y = (torch.randint(0, 2, (b, s), generator=g).float() if cfg.mode == "binary"
         else torch.randint(1, 6, (b, s), generator=g).float())
    return Support(torch.randint(0, cfg.n_users, (b,), generator=g),
                   torch.randint(1, cfg.n_items, (b, s), generator=g),
                   torch.randint(0, cfg.n_context_buckets, (b, s, cfg.max_context), generator=g), y * mask, mask)


@pytest.mark.parametrize("mode, loss", [("binary", "mse"), ("rating", "mse"), ("rating", "huber"), ("rating", "l1")])
def test_batched_adaptation_equals_per_user_loop(mode: str, loss: str) -> None:
    model = _model(mode, rating_loss=loss)
    sup = _support(model)
    ref = adapt_loop(model, sup, steps=3, lr=0.3)
    with torch.no_grad():
        batched = adapt(model, sup, 3, 0.3)
        explicit = adapt_explicit(model, sup, 3, 0.3)
    init = model.fast_init()
    for name in ref:
        torch.testing.assert_close(batched[name], ref[name], atol=TOL, rtol=0)
        torch.testing.assert_close(explicit[name], ref[name], atol=TOL, rtol=0)
        torch.testing.assert_close(explicit[name][0], init[name].detach(), atol=0, rtol=0)  # no events: init
    # the users with events moved: the comparison is not between two copies of the init
    assert (explicit["out.weight"][2] - init["out.weight"]).abs().max() > 1e-3


def test_explicit_adaptation_respects_partial_adapt_sets() -> None:
    """Only the output layer adapted: gradients still flow through the frozen layers' maths."""
    model = _model("binary", adapt=("out",))
    sup = _support(model)
    ref = adapt_loop(model, sup, steps=2, lr=0.5)
    with torch.no_grad():
        got = adapt_explicit(model, sup, 2, 0.5)
    assert set(got) == {"out.weight", "out.bias"}
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], atol=TOL, rtol=0)


def test_a_user_adapts_the_same_alone_or_in_a_padded_batch() -> None:
    model = _model()
    sup = _support(model, s=20)
    with torch.no_grad():
        together = adapt(model, sup, 3, 0.3)
        for b in range(len(sup)):
            n = int(sup.mask[b].sum())
            row = sup.row(b)
            alone = adapt(model, Support(row.users, row.items[:, :max(n, 1)], row.ctx[:, :max(n, 1)],
                                         row.y[:, :max(n, 1)], row.mask[:, :max(n, 1)]), 3, 0.3)
            for name in alone:
                torch.testing.assert_close(together[name][b], alone[name][0], atol=TOL, rtol=0)


def _recommender(model: RecModel, scorer: object | None = None) -> Recommender:
    vocab = Vocab(users=[f"u{i}" for i in range(1, model.cfg.n_users)],
                  items=[f"i{i}" for i in range(1, model.cfg.n_items)])
    bundle = Bundle(path=Path("."), version="test", model=model, vocab=vocab, manifest={})
    return Recommender(bundle, scorer or TorchScorer(model), top_k=5)  # type: ignore[arg-type]


def test_coalesced_adaptation_equals_sequential() -> None:
    """Three events of u3 in one micro-batch → one adaptation, equal to adapting after each."""
    model = _model()
    rec = _recommender(model)
    evs = [new_event("u3", f"i{i}", "click" if i % 2 else "view", float(i % 2), 100.0 + i,
                     {"device": "tv"}) for i in (4, 9, 17)]
    sequential, state = None, None
    for e in evs:
        state, _ = step(state, [e])
        sequential = rec.recommend([state], now=0.0)[0]
    pending, state = Pending(), None
    for e in evs:
        state, new = step(state, [e])
        pending.touch(state, new, e.ts)
    batch = pending.take(10)
    assert len(batch) == 1 and len(batch[0].new) == 3
    coalesced = rec.recommend([batch[0].state], now=0.0)[0]
    assert sequential is not None
    assert coalesced.items == sequential.items
    np.testing.assert_allclose(coalesced.scores, sequential.scores, atol=TOL)
    assert not {"i4", "i9", "i17"} & set(coalesced.items)  # consumed items excluded


def test_onnx_scorer_equals_torch_scorer(tmp_path: Path) -> None:
    model = _model()
    export_onnx(model, tmp_path / "model.onnx")
    sup = _support(model)
    with torch.no_grad():
        fast = {k: v.numpy() for k, v in adapt(model, sup, 3, 0.3).items()}
    users = sup.users.numpy()
    ctx = sup.ctx[:, 0].numpy()
    a = OnnxScorer(tmp_path / "model.onnx").score(users, ctx, fast)
    b = TorchScorer(model).score(users, ctx, fast)
    assert a.shape == (len(users), model.cfg.n_items - 1)
    np.testing.assert_allclose(a, b, atol=TOL)
    assert np.ptp(a, axis=1).min() > 0  # not a constant output
    # a batch run in calls of a few users equals one call, to float rounding (a tiny catalog gets one call)
    assert OnnxScorer(tmp_path / "model.onnx").rows_per_call >= len(users)
    for rows in (1, 2, 3):
        chunked = OnnxScorer(tmp_path / "model.onnx", rows_per_call=rows).score(users, ctx, fast)
        whole = OnnxScorer(tmp_path / "model.onnx", rows_per_call=0).score(users, ctx, fast)
        np.testing.assert_allclose(chunked, whole, rtol=1e-6, atol=1e-7)  # kernels may sum in another order


def test_onnx_rows_per_call_follows_catalog_and_width(tmp_path: Path) -> None:
    """Calls are sized so users × items × widest adapted layer × 4 bytes stays within CALL_BYTES."""
    from metarec.score import CALL_BYTES

    model = _model()
    export_onnx(model, tmp_path / "model.onnx")
    n, width = model.cfg.n_items - 1, max(model.cfg.hidden)
    assert OnnxScorer(tmp_path / "model.onnx").rows_per_call == max(1, CALL_BYTES // (n * width * 4))


def test_top_k_equals_full_sort_with_exclusions() -> None:
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((6, 40)).astype(np.float32)
    exclude = [set(rng.choice(40, 5, replace=False).tolist()) for _ in range(6)]
    cols, vals = top_k(scores, 7, exclude)
    for b in range(6):
        order = [int(j) for j in np.argsort(-scores[b], kind="stable") if int(j) not in exclude[b]][:7]
        assert cols[b].tolist() == order
        np.testing.assert_array_equal(vals[b], scores[b, order])


def test_candidate_scoring_equals_full_scoring_on_the_candidates() -> None:
    model = _model()
    sup = _support(model)
    with torch.no_grad():
        fast = {k: v.numpy() for k, v in adapt(model, sup, 3, 0.3).items()}
    users, ctx = sup.users.numpy(), sup.ctx[:, 0].numpy()
    index = CandidateIndex(model.item_emb.weight.detach().numpy(), np.arange(model.cfg.n_items, dtype=float),
                           neighbours=4, popular=6)
    recent = [sup.items[b][sup.mask[b] > 0].tolist() for b in range(len(sup))]
    exclude = [set(r) for r in recent]
    items, valid = index.candidates(recent, limit=15, exclude=exclude)
    assert items.shape[1] <= 15 and valid.any(axis=1).all()
    for b in range(len(sup)):
        got = set(items[b][valid[b]].tolist())
        assert not got & exclude[b]
        assert got >= set(index.popular()[:3].tolist()) - exclude[b] or len(got) == 15
        if recent[b]:  # the newest item's nearest neighbour comes first
            first = [j for j in index.neighbours(np.array([recent[b][-1]]))[0] if j not in exclude[b]]
            assert items[b, 0] == first[0]
    all_at_once = item_neighbours(model.item_emb.weight.detach().numpy(), 4)
    touched = np.unique(np.concatenate([r for r in recent if r]))
    np.testing.assert_array_equal(index.neighbours(touched), all_at_once[touched])  # lazy == eager
    full = TorchScorer(model).score(users, ctx, fast)
    t = TorchCandidateScorer(model).score(users, ctx, fast, items)
    o = OnnxCandidateScorer(model).score(users, ctx, fast, items)
    np.testing.assert_allclose(t[valid], np.take_along_axis(full, items - 1, axis=1)[valid], atol=TOL)
    np.testing.assert_allclose(o[valid], t[valid], atol=TOL)
    cols, _ = top_k_items(o, items, valid, 3)
    for b in range(len(sup)):
        ranked = sorted(items[b][valid[b]].tolist(), key=lambda i: -full[b, i - 1])[:3]
        assert (cols[b] + 1).tolist() == ranked
