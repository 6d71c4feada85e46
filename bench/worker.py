"""Launch the adapter worker for the end-to-end bench, optionally with a proposed change applied.

``METAREC_BENCH_ADAPT=proposed`` swaps the worker's ``adapt`` for :func:`bench.fastadapt.adapt_explicit`
and its context hashing for :func:`bench.fastadapt.hash_context_cached` (the diffs proposed for
shared/metarec/adapt.py and model.py) without touching the shared code. Compute runs
on one thread (``METAREC_BENCH_THREADS``, default 1).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

torch.set_num_threads(int(os.environ.get("METAREC_BENCH_THREADS", "1")))

if os.environ.get("METAREC_BENCH_ADAPT") == "proposed":
    from metarec import (
        features,
        recommend,
    )

    from bench.fastadapt import adapt_explicit, hash_context_cached

    features.hash_context = hash_context_cached  # type: ignore[assignment]
    recommend.adapt = lambda model, sup, steps, lr, **kw: adapt_explicit(model, sup, steps, lr)  # type: ignore

from metarec.cli import main

if __name__ == "__main__":
    sys.argv = [sys.argv[0], "worker", *sys.argv[1:]]
    main()
