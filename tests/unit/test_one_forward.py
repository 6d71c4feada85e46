"""One forward pass: every derived path equals ``RecModel.forward`` for every configuration.

The reference is ``forward`` → ``predict`` row by row through ``functional_call`` with one user's
fast weights. Held equal to it, over bias × item attributes × Meta-SGD × mode (× rating loss) ×
the adapted layers the evaluation uses, with user-attribute context (hashed like MovieLens'
gender/age/occupation, padded):

- (a) :func:`metarec.model.score_matrix` (the catalog graph) and (b) :func:`metarec.score.score_items`
  (candidates), within 1e-5;
- (c) :func:`metarec.fastadapt.adapt_explicit` equals :func:`metarec.adapt.adapt` (``vmap``) under
  ``no_grad`` for 3 steps within 1e-5, and takes its hand-written path (the fallback is made to fail);
- (d) the exported ONNX graphs (catalog, per-user template, candidates) equal torch within 1e-4.

Biases, item attribute ids, embeddings and Meta-SGD rates are random and far from zero, so a path
that drops one of them fails (the drift this file was written for: bias and attributes ignored).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch.func import functional_call

from metarec import fastadapt
from metarec.adapt import Fast, Support, adapt
from metarec.artifact import export_onnx
from metarec.export import UserTemplate
from metarec.fastadapt import adapt_explicit, fast_path_ok
from metarec.model import ModelConfig, RecModel, hash_context, score_matrix
from metarec.score import OnnxCandidateScorer, OnnxScorer, score_items

TOL = 1e-5
ONNX_TOL = 1e-4
BUCKETS, WIDTH = 16, 4
MODES = [("binary", "mse"), ("rating", "mse"), ("rating", "l1"), ("rating", "huber")]
CONFIGS = [dict(bias=bias, item_attrs=attrs, meta_sgd=msgd, mode=mode, rating_loss=loss)
           for bias, attrs, msgd, (mode, loss) in itertools.product([False, True], [0, 3], [False, True], MODES)]
ADAPT_SETS = [("layers", "out"), ("layers.1", "out"), ("out",)]  # the evaluation's "layers+out", "last+out", "out"


def _id(cfg: dict) -> str:
    mode = cfg["mode"] if cfg["mode"] == "binary" else f"rating-{cfg['rating_loss']}"
    return f"bias{int(cfg['bias'])}-attrs{cfg['item_attrs']}-msgd{int(cfg['meta_sgd'])}-{mode}"


def make_model(seed: int = 0, adapt: tuple[str, ...] = ("layers", "out"), **kw: object) -> RecModel:
    torch.manual_seed(seed)
    cfg = ModelConfig(n_users=5, n_items=12, dim=4, hidden=(6, 5), n_context_buckets=BUCKETS, max_context=WIDTH,
                      adapt=adapt, **kw)  # type: ignore[arg-type]
    model = RecModel(cfg).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for emb in (model.user_emb, model.item_emb, model.ctx_emb):
            emb.weight.copy_(0.5 * torch.randn(emb.weight.shape, generator=g))
        model.ctx_emb.weight[0].zero_()  # the padding id
        if cfg.bias:
            for emb in (model.user_bias, model.item_bias):
                emb.weight.copy_(torch.randn(emb.weight.shape, generator=g))
        if cfg.item_attrs:
            model.item_attr.copy_(torch.randint(0, BUCKETS, model.item_attr.shape, generator=g))  # 0: padding
        if cfg.meta_sgd:
            for rate in model.inner_lrs.values():
                rate.copy_(0.05 + 0.3 * torch.rand(rate.shape, generator=g))
    return model


def user_attrs(b: int) -> list[dict[str, str]]:
    """``b`` users' attributes, like MovieLens' gender/age/occupation: 1–3 fields each."""
    fields = [("gender", "FM"), ("age", ["18", "25", "35", "45"]), ("occupation", ["writer", "student", "nurse"])]
    return [{k: v[(i + j) % len(v)] for j, (k, v) in enumerate(fields[:1 + i % 3])} for i in range(b)]


def user_ctx(model: RecModel, b: int) -> np.ndarray:
    """User-attribute context ``(B, F)``: the hashed attributes, 0-padded."""
    return np.array([hash_context(a, BUCKETS, WIDTH) for a in user_attrs(b)], dtype=np.int64)


def make_support(model: RecModel, b: int = 4, s: int = 6, seed: int = 2) -> Support:
    """Ragged support sets (one user with no events) whose rows' context is the user's attributes
    plus, on every other row, an event feature (device)."""
    g = torch.Generator().manual_seed(seed)
    cfg = model.cfg
    lengths = torch.tensor([s, 3, 0, s - 1][:b])
    mask = (torch.arange(s)[None, :] < lengths[:, None]).float()
    y = (torch.randint(0, 2, (b, s), generator=g) if cfg.mode == "binary" else torch.randint(1, 6, (b, s), generator=g))
    attrs = user_attrs(b)
    ctx = torch.tensor([[hash_context(attrs[i] | ({"device": ["tv", "phone", "web"][(i + j) % 3]} if j % 2 else {}),
                                      BUCKETS, WIDTH) for j in range(s)] for i in range(b)])
    return Support(torch.tensor([1, 3, 0, 4][:b]), torch.randint(1, cfg.n_items, (b, s), generator=g), ctx,
                   y.float() * mask, mask)


def lr_of(model: RecModel) -> float | dict[str, torch.Tensor]:
    return model.inner_lr_map() if model.cfg.meta_sgd else 0.2


def reference(model: RecModel, fast: Fast, users: torch.Tensor, ctx: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """``forward`` → ``predict`` per user under its fast weights: ``items (B, C)`` → ``(B, C)``."""
    params = dict(model.named_parameters())
    out = []
    for b in range(len(users)):
        c = items.shape[1]
        p = {**params, **{k: v[b] for k, v in fast.items()}}
        logits = functional_call(model, p, (users[b].expand(c), items[b], ctx[b].expand(c, -1)))
        out.append(model.predict(logits))
    return torch.stack(out)


def adapted(model: RecModel) -> tuple[Support, Fast]:
    sup = make_support(model)
    with torch.no_grad():
        return sup, adapt(model, sup, 3, lr_of(model))


def test_the_test_has_teeth() -> None:
    """Bias terms and item attributes move the scores well above the tolerance."""
    model = make_model(bias=True, item_attrs=3)
    items = torch.arange(1, model.cfg.n_items)
    with torch.no_grad():
        assert (model.item_vec(items) - model.item_emb(items)).abs().max() > 0.1
        z = torch.zeros(3, len(items))
        assert (model.with_bias(z, torch.tensor([[1], [2], [3]]), items) - z).abs().min() > 1e-3


@pytest.mark.parametrize("adapt_names", ADAPT_SETS, ids="+".join)
@pytest.mark.parametrize("cfg", CONFIGS, ids=_id)
def test_score_matrix_and_score_items_equal_forward(cfg: dict, adapt_names: tuple[str, ...]) -> None:
    model = make_model(adapt=adapt_names, **cfg)
    sup, fast = adapted(model)
    users, ctx = sup.users, torch.as_tensor(user_ctx(model, len(sup)))
    n = model.cfg.n_items - 1
    catalog = torch.arange(1, model.cfg.n_items)
    cand = torch.randint(1, model.cfg.n_items, (len(sup), 5), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        ref_all = reference(model, fast, users, ctx, catalog.expand(len(sup), n))
        ref_cand = reference(model, fast, users, ctx, cand)
        mat = score_matrix(model, fast, users, ctx, catalog)
        got = score_items(model, fast, users, ctx, cand)
    torch.testing.assert_close(mat, ref_all, atol=TOL, rtol=0)  # (a)
    torch.testing.assert_close(got, ref_cand, atol=TOL, rtol=0)  # (b)
    assert float(ref_all.std(1).min()) > 1e-3  # items really are told apart


@pytest.mark.parametrize("adapt_names", ADAPT_SETS, ids="+".join)
@pytest.mark.parametrize("cfg", CONFIGS, ids=_id)
def test_explicit_adaptation_equals_vmap_on_its_fast_path(cfg: dict, adapt_names: tuple[str, ...],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    model = make_model(adapt=adapt_names, **cfg)
    sup = make_support(model)
    lr = lr_of(model)
    with torch.no_grad():
        ref = adapt(model, sup, 3, lr)
    assert fast_path_ok(model)

    def no_fallback(*_: object, **__: object) -> Fast:
        raise AssertionError("adapt_explicit fell back to metarec.adapt.adapt")

    monkeypatch.setattr(fastadapt, "adapt", no_fallback)
    with torch.no_grad():
        got = adapt_explicit(model, sup, 3, lr)  # (c)
    assert set(got) == set(ref) == set(model.adapted_names())
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], atol=TOL, rtol=0)
    init = model.fast_init()
    assert (got["out.weight"][0] - init["out.weight"]).abs().max() > 1e-3  # adaptation moved the weights
    assert torch.equal(got["out.weight"][2], init["out.weight"].detach())  # the user with no events: the init


@pytest.mark.parametrize("loss", ["mse", "l1", "huber"])
@pytest.mark.parametrize("adapt_names", ADAPT_SETS, ids="+".join)
def test_explicit_fine_tuning_of_other_layers_and_loss_equals_vmap(adapt_names: tuple[str, ...], loss: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Fine-tuning (the evaluation's baseline) names its own layers (``fast0``) and loss: the
    explicit path follows both, and runs the layers below the adapted ones once."""
    model = make_model(mode="rating", rating_loss="mse", bias=True, item_attrs=3)  # the model adapts layers+out
    sup = make_support(model)
    fast0 = {n: p for n, p in model.named_parameters() if n.startswith(adapt_names)}
    with torch.no_grad():
        ref = adapt(model, sup, 3, 0.3, fast0=fast0, loss=loss)
    monkeypatch.setattr(fastadapt, "adapt", lambda *a, **k: (_ for _ in ()).throw(AssertionError("fell back")))
    with torch.no_grad():
        got = adapt_explicit(model, sup, 3, 0.3, fast0=fast0, loss=loss)
    assert set(got) == set(ref) == set(fast0)
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], atol=TOL, rtol=0)
    assert (got["out.weight"][0] - fast0["out.weight"]).abs().max() > 1e-3


@pytest.mark.parametrize("adapt_names", [("user_bias", "out"), ("item_emb", "layers")])
def test_adapted_embeddings_fall_back_and_are_refused_by_the_batched_scorers(adapt_names: tuple[str, ...]) -> None:
    model = make_model(bias=True, item_attrs=3, adapt=adapt_names)
    assert not fast_path_ok(model)
    sup = make_support(model)
    with torch.no_grad():
        ref = adapt(model, sup, 2, 0.2)
        got = adapt_explicit(model, sup, 2, 0.2)
        for name in ref:
            torch.testing.assert_close(got[name], ref[name], atol=0, rtol=0)
        with pytest.raises(ValueError, match="not decision or output layer weights"):
            score_matrix(model, got, sup.users, sup.ctx[:, 0], torch.arange(1, model.cfg.n_items))


# every configuration the graphs can differ in: the rating loss only trains, so one per mode
ONNX_CONFIGS = [dict(bias=bias, item_attrs=attrs, meta_sgd=msgd, mode=mode, rating_loss=loss, adapt=adapt)
                for bias, attrs, msgd, (mode, loss), adapt in itertools.product(
                    [False, True], [0, 3], [False, True], [("binary", "mse"), ("rating", "huber")], ADAPT_SETS)]


@pytest.mark.parametrize("cfg", ONNX_CONFIGS, ids=lambda c: _id({"rating_loss": "mse", **c}) + "-" + "+".join(
    c.get("adapt", ("layers", "out"))))
def test_onnx_graphs_equal_forward(cfg: dict, tmp_path: Path) -> None:
    model = make_model(**cfg)
    sup, fast = adapted(model)
    users, ctx = sup.users, torch.as_tensor(user_ctx(model, len(sup)))
    n = model.cfg.n_items - 1
    cand = torch.randint(1, model.cfg.n_items, (len(sup), 5), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        ref_all = reference(model, fast, users, ctx, torch.arange(1, model.cfg.n_items).expand(len(sup), n)).numpy()
        ref_cand = reference(model, fast, users, ctx, cand).numpy()
    fast_np = {k: v.numpy() for k, v in fast.items()}
    path = tmp_path / "model.onnx"
    export_onnx(model, path)
    catalog = OnnxScorer(path).score(users.numpy(), ctx.numpy(), fast_np)
    np.testing.assert_allclose(catalog, ref_all, atol=ONNX_TOL, rtol=0)
    template = UserTemplate.from_file(path)
    for b, u in enumerate(users.tolist()):  # the per-user graph (export.py), patched from the catalog graph
        blob = template.patch(u, {k: v[b] for k, v in fast_np.items()})
        one = ort.InferenceSession(blob, providers=["CPUExecutionProvider"]).run(["scores"], {"ctx": ctx.numpy()[b:b + 1]})
        np.testing.assert_allclose(one[0][0], ref_all[b], atol=ONNX_TOL, rtol=0)
    got = OnnxCandidateScorer(model).score(users.numpy(), ctx.numpy(), fast_np, cand.numpy())
    np.testing.assert_allclose(got, ref_cand, atol=ONNX_TOL, rtol=0)
