"""3. Scoring: onnxruntime (one session, adapted weights as inputs) against torch, users/s.

Catalogs of 1k, 10k and 100k items, each scorer scoring the full catalog for a batch of users
and taking the top-10 with 50 consumed items excluded; plus the candidate stage (popularity
and item-embedding neighbours, ``--candidates`` items per user) through onnxruntime.
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
from metarec.candidates import CandidateIndex
from metarec.model import ModelConfig, RecModel
from metarec.score import (
    OnnxCandidateScorer,
    OnnxScorer,
    TorchCandidateScorer,
    TorchScorer,
    top_k,
    top_k_items,
)


def run(quick: bool, candidates: int = 500) -> dict[str, Any]:
    catalogs = [1_000, 10_000, 100_000]
    rounds = 2 if quick else 4
    batch = {1_000: 64, 10_000: 32 if quick else 64, 100_000: 2 if quick else 16}
    out: dict[str, Any] = {"batch_users": batch, "candidates": candidates, "catalogs": {}}
    rows = []
    rng = np.random.default_rng(0)
    for n in catalogs:
        torch.manual_seed(0)
        model = RecModel(ModelConfig(n_users=common.ML_USERS + 1, n_items=n + 1)).eval()
        b = batch[n]
        fast = {k: (v.detach().numpy()[None] + 0.01 * rng.standard_normal((b, *v.shape))).astype(np.float32)
                for k, v in model.fast_init().items()}
        users = rng.integers(1, common.ML_USERS, b)
        ctx = rng.integers(0, model.cfg.n_context_buckets, (b, model.cfg.max_context))
        recent = [rng.integers(1, n + 1, 50).tolist() for _ in range(b)]
        exclude = [{i - 1 for i in r} for r in recent]
        with tempfile.TemporaryDirectory() as tmp:
            export_onnx(model, Path(tmp) / "model.onnx")
            onnx_s = OnnxScorer(Path(tmp) / "model.onnx", threads=1)  # calls of rows_per_call users
            onnx_one = OnnxScorer(Path(tmp) / "model.onnx", threads=1, rows_per_call=0)  # the whole batch in one call
        torch_s = TorchScorer(model)
        t0 = time.perf_counter()
        index = CandidateIndex(model.item_emb.weight.detach().numpy(), rng.zipf(1.5, n + 1).astype(float))
        index_s = time.perf_counter() - t0
        cand_onnx, cand_torch = OnnxCandidateScorer(model), TorchCandidateScorer(model)
        excl_idx = [{i for i in r} for r in recent]

        def full(scorer: Any) -> Any:
            return lambda: top_k(scorer.score(users, ctx, fast), 10, exclude)

        def cand(scorer: Any) -> Any:
            def go() -> Any:
                items, valid = index.candidates(recent, candidates, excl_idx)
                return top_k_items(scorer.score(users, ctx, fast, items), items, valid, 10)
            return go

        fns = {"onnx": full(onnx_s), "onnx_one_call": full(onnx_one), "torch": full(torch_s), "onnx_candidates": cand(cand_onnx),
               "torch_candidates": cand(cand_torch)}
        res: dict[str, list[float]] = {k: [] for k in fns}
        min_s = 0.2 if quick else 1.0
        for _ in range(rounds):
            for k, fn in fns.items():
                res[k].append(b / common.time_call(fn, min_s, max_reps=200))  # warm call included once
        med = {k: common.median_rate(v) for k, v in res.items()}
        out["catalogs"][str(n)] = {"users_per_s": med, "rounds": res, "onnx_over_torch": med["onnx"] / med["torch"],
                                   "onnx_rows_per_call": onnx_s.rows_per_call,
                                   "onnx_calls_over_one_call": med["onnx"] / med["onnx_one_call"],
                                   "candidate_index_build_s": index_s,
                                   "candidates_over_full_onnx": med["onnx_candidates"] / med["onnx"]}
        rows.append([n, b, med["onnx"], f"{med['onnx_one_call']:,.0f} ({onnx_s.rows_per_call}/call: "
                     f"{med['onnx'] / med['onnx_one_call']:.2f}x)", med["torch"], med["onnx"] / med["torch"],
                     med["onnx_candidates"],
                     med["torch_candidates"]])
    md = ("# Scoring (users/s, 1 thread, top-10 with 50 consumed items excluded)\n\n"
          + common.table(["items", "batch", "onnxruntime full", "ort in one call (users per call: gain)",
                          "torch full", "ort / torch",
                          f"ort candidates ({candidates})", f"torch candidates ({candidates})"], rows)
          + "\nCandidate timings include building each user's candidate set (neighbours of the 50 recent "
            "items, then popular items). onnxruntime runs a batch in calls of as many users as keep "
            "the widest activation within about 8 MiB (`metarec.score.CALL_BYTES`); the one-call column is "
            "the whole batch at once.\n")
    common.write("score", out, md)
    return out
