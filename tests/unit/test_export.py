"""Per-user ONNX export: patched template == re-traced export == torch, and the command."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import typer
from typer.testing import CliRunner

from metarec import artifact
from metarec.adapt import Support, adapt
from metarec.cli import export
from metarec.data import write_jsonl
from metarec.events import new_event
from metarec.export import UserTemplate, export_retraced
from metarec.model import ModelConfig, RecModel, Vocab, score_matrix

TOL = 1e-5


@pytest.fixture(scope="module")
def model() -> RecModel:
    torch.manual_seed(3)
    return RecModel(ModelConfig(n_users=20, n_items=50, dim=8, hidden=(16, 8))).eval()


@pytest.fixture(scope="module")
def template(model: RecModel, tmp_path_factory: pytest.TempPathFactory) -> UserTemplate:
    path = tmp_path_factory.mktemp("tmpl") / "model.onnx"
    artifact.export_onnx(model, path)
    return UserTemplate.from_file(path, {"model_version": "v-test"})


def _adapted(model: RecModel, users: list[int]) -> dict[str, np.ndarray]:
    g = torch.Generator().manual_seed(5)
    b, s, cfg = len(users), 10, model.cfg
    sup = Support(torch.tensor(users), torch.randint(1, cfg.n_items, (b, s), generator=g),
                  torch.randint(0, cfg.n_context_buckets, (b, s, cfg.max_context), generator=g),
                  torch.randint(0, 2, (b, s), generator=g).float(), torch.ones(b, s))
    with torch.no_grad():
        return {k: v.numpy() for k, v in adapt(model, sup, 3, 0.5).items()}


def _torch_scores(model: RecModel, user: int, fast: dict[str, np.ndarray], ctx: np.ndarray) -> np.ndarray:
    b = ctx.shape[0]
    f = {k: torch.as_tensor(v).unsqueeze(0).expand(b, *v.shape) for k, v in fast.items()}
    with torch.no_grad():
        return score_matrix(model, f, torch.full((b,), user), torch.as_tensor(ctx),
                            torch.arange(1, model.cfg.n_items)).numpy()


def _run(blob: bytes, ctx: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(blob, providers=["CPUExecutionProvider"]).run(["scores"], {"ctx": ctx})[0]


def test_patched_equals_retraced_equals_torch(model: RecModel, template: UserTemplate) -> None:
    users = [3, 7, 0]
    fast = _adapted(model, users)
    ctx = np.random.default_rng(0).integers(0, model.cfg.n_context_buckets, (4, model.cfg.max_context))
    outs = []
    for b, u in enumerate(users):  # one template patched for several users in turn: nothing leaks
        mine = {k: v[b] for k, v in fast.items()}
        patched = _run(template.patch(u, mine, f"u{u}"), ctx)
        buf = io.BytesIO()
        export_retraced(model, u, {k: torch.as_tensor(v) for k, v in mine.items()}, buf)
        retraced = _run(buf.getvalue(), ctx)
        ref = _torch_scores(model, u, mine, ctx)
        assert patched.shape == (4, model.cfg.n_items - 1)
        np.testing.assert_allclose(patched, ref, atol=TOL)
        np.testing.assert_allclose(retraced, ref, atol=TOL)
        outs.append(patched)
    assert np.abs(outs[0] - outs[1]).max() > 1e-4  # different users really differ


def test_patched_file_is_self_contained(model: RecModel, template: UserTemplate, tmp_path: Path) -> None:
    fast = {k: v[0] for k, v in _adapted(model, [4]).items()}
    path = template.write(tmp_path / "u4.onnx", 4, fast, "u4")
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert [i.name for i in proto.graph.input] == ["ctx"]
    meta = {p.key: p.value.strip() for p in proto.metadata_props}
    assert meta["user_id"] == "u4" and meta["model_version"] == "v-test"
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    np.testing.assert_array_equal(inits["user.index"], [4])
    np.testing.assert_array_equal(inits["user.fast.out.weight"][0], fast["out.weight"])


def test_patch_rejects_wrong_shapes(model: RecModel, template: UserTemplate) -> None:
    fast = {k: v.detach().numpy() for k, v in model.fast_init().items()}
    fast["out.weight"] = fast["out.weight"][:, :-1]
    with pytest.raises(ValueError, match="out.weight must have shape"):
        template.patch(1, fast)


def test_export_command(model: RecModel, tmp_path: Path) -> None:
    vocab = Vocab(users=[f"u{i}" for i in range(1, 20)], items=[f"i{i}" for i in range(1, 50)])
    d = artifact.save(model, vocab, tmp_path / "models", {})
    evs = [new_event("u2", f"i{i}", "click" if i % 3 else "view", float(i % 3 > 0), 10.0 + i, {"device": "tv"})
           for i in range(1, 9)] + [new_event("u5", "i1", "click", 1.0, 1.0)]
    write_jsonl(evs, tmp_path / "events.jsonl")
    app = typer.Typer()
    app.command()(export)
    app.command("noop")(lambda: None)  # keep typer in multi-command mode, as in metarec's CLI
    out = tmp_path / "u2.onnx"
    res = CliRunner().invoke(app, ["export", "--user", "u2", "--model-dir", str(d), "--events",
                                   str(tmp_path / "events.jsonl"), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "adapted on 8 events" in res.output
    ctx = np.zeros((1, model.cfg.max_context), np.int64)
    got = _run(out.read_bytes(), ctx)
    # the same user adapted in torch from the same buffer
    from metarec.export import user_fast
    from metarec.state import step

    buf = step(None, [e for e in evs if e.user_id == "u2"], model.cfg.buffer_size, 0)[0].buffer
    fast = user_fast(model, buf, "u2", vocab)
    np.testing.assert_allclose(got, _torch_scores(model, 2, fast, ctx), atol=TOL)
    init = {k: v.detach().numpy() for k, v in model.fast_init().items()}
    assert np.abs(got - _torch_scores(model, 2, init, ctx)).max() > 1e-5  # adapted, not the init
    assert json.loads((d / "manifest.json").read_text())["version"] in {
        p.value for p in onnx.load(str(out)).metadata_props}
    res = CliRunner().invoke(app, ["export", "--user", "nobody", "--model-dir", str(d), "--events",
                                   str(tmp_path / "events.jsonl"), "--out", str(tmp_path / "x.onnx")])
    assert res.exit_code != 0 and "no events" in str(res.exception)
