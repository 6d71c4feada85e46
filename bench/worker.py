"""Launch the adapter worker for the end-to-end bench, optionally with the generic vmap adaptation swapped in.

``METAREC_BENCH_ADAPT=vmap`` swaps the worker's serving adaptation (:func:`metarec.fastadapt.adapt_explicit`)
for the generic ``vmap`` path (:func:`metarec.adapt.adapt`), so the two can be raced end to end.
Compute runs on one thread (``METAREC_BENCH_THREADS``, default 1).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

torch.set_num_threads(int(os.environ.get("METAREC_BENCH_THREADS", "1")))

if os.environ.get("METAREC_BENCH_ADAPT") == "vmap":
    from metarec import recommend
    from metarec.adapt import adapt

    recommend.adapt_explicit = adapt  # type: ignore[assignment]

from metarec.cli import main

if __name__ == "__main__":
    sys.argv = [sys.argv[0], "worker", *sys.argv[1:]]
    main()
