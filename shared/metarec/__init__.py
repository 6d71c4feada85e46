"""metarec: a meta-learned initialization, adapted per user from the live event stream."""

from __future__ import annotations

__version__ = "0.1.0"
