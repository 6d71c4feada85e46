"""Launch the adapter worker for the end-to-end bench, optionally with a proposed change applied.

``METAREC_BENCH_ADAPT=explicit`` swaps the worker's ``adapt`` for :func:`bench.fastadapt.adapt_explicit`
(the diff proposed for shared/metarec/adapt.py) without touching the shared code. Compute runs
on one thread (``METAREC_BENCH_THREADS``, default 1).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

torch.set_num_threads(int(os.environ.get("METAREC_BENCH_THREADS", "1")))

if os.environ.get("METAREC_BENCH_ADAPT") == "explicit":
    import metarec.recommend as recommend  # noqa: E402
    from bench.fastadapt import adapt_explicit  # noqa: E402

    recommend.adapt = lambda model, sup, steps, lr, **kw: adapt_explicit(model, sup, steps, lr)  # type: ignore

from metarec.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.argv = [sys.argv[0], "worker", *sys.argv[1:]]
    main()
