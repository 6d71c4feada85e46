"""Launch the adapter worker for the end-to-end bench.

``METAREC_COMPUTE`` (``process``, the default, or ``thread``) chooses where adaptation and
scoring run, so the two can be raced end to end; torch uses one intra-op thread
(``METAREC_TORCH_THREADS`` to change it).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from metarec.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.argv = [sys.argv[0], "worker", *sys.argv[1:]]
    main()
