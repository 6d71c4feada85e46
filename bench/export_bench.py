"""2. Per-user export: re-tracing with ``torch.onnx.export`` against patching a template, ms per user.

Both write a self-contained ``.onnx`` file per user (MovieLens-100K-sized model); rounds alternate.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench import common
from metarec.artifact import export_onnx
from metarec.export import UserTemplate, export_retraced
from metarec.model import ModelConfig, RecModel


def run(quick: bool) -> dict[str, Any]:
    torch.manual_seed(0)
    model = RecModel(ModelConfig(n_users=common.ML_USERS + 1, n_items=common.ML_ITEMS + 1)).eval()
    rounds, n_retrace, n_patch = (3, 4, 200) if quick else (5, 10, 1000)
    rng = np.random.default_rng(0)
    init = {k: v.detach().numpy() for k, v in model.fast_init().items()}
    users = [{k: (v + 0.01 * rng.standard_normal(v.shape)).astype(np.float32) for k, v in init.items()}
             for _ in range(16)]
    retrace, patch, template_s = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        export_onnx(model, d / "model.onnx")
        t0 = time.perf_counter()
        tmpl = UserTemplate.from_file(d / "model.onnx")
        template_s.append(time.perf_counter() - t0)
        for _ in range(rounds):
            t0 = time.perf_counter()
            for i in range(n_retrace):
                f = users[i % len(users)]
                export_retraced(model, i + 1, {k: torch.from_numpy(v) for k, v in f.items()}, d / f"r{i}.onnx")
            retrace.append((time.perf_counter() - t0) / n_retrace * 1e3)
            t0 = time.perf_counter()
            for i in range(n_patch):
                tmpl.write(d / f"p{i % 50}.onnx", i + 1, users[i % len(users)], f"u{i}")
            patch.append((time.perf_counter() - t0) / n_patch * 1e3)
        size = (d / "p0.onnx").stat().st_size
    r, p = float(np.median(retrace)), float(np.median(patch))
    out = {"ms_per_user_retrace": r, "ms_per_user_patch": p, "speedup": r / p, "retrace_rounds": retrace,
           "patch_rounds": patch, "template_build_s": template_s[0], "file_bytes": size,
           "users_per_round": {"retrace": n_retrace, "patch": n_patch}}
    md = ("# Per-user ONNX export\n\n" + common.table(
        ["method", "ms / user", "users / s"],
        [["re-trace (torch.onnx.export)", r, 1e3 / r], ["patch template initializers", p, 1e3 / p]])
        + f"\nPatching is {r / p:,.0f}x faster (file {size / 1e3:.0f} kB, both include writing the file; "
          f"the template is built once per model in {template_s[0] * 1e3:.0f} ms).\n")
    common.write("export", out, md)
    return out
