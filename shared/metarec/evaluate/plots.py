"""PNG plots: MAE against support size (MeLU); AUC over time and by user history (prequential)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def by_size(out: Path, curve: dict[str, dict[int, float]], name: str, xlabel: str, ylabel: str,
            log_x: bool = False) -> str:
    """One line per method of ``{method: {size: value}}``, ticks at the sizes themselves; saved as ``name``."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, c in curve.items():
        ks = sorted(c)
        ax.plot(ks, [c[k] for k in ks], marker="o", label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if log_x:
        ax.set_xscale("log")
    ks = sorted({k for c in curve.values() for k in c})
    ax.set_xticks(ks, [str(k) for k in ks])  # the sizes themselves, not powers of ten
    ax.minorticks_off()
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return name


def support_curve(out: Path, curve: dict[str, dict[int, float]]) -> str:
    return by_size(out, curve, "mae_by_support.png", "support events", "MAE (new users)", log_x=True)


def auc_over_time(out: Path, series: dict[str, list[tuple[float, float]]]) -> str:
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, pts in series.items():
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label=name)
    ax.set_xlabel("test window (fraction of the test period)")
    ax.set_ylabel("AUC")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "auc_over_time.png", dpi=110)
    plt.close(fig)
    return "auc_over_time.png"


def auc_by_history(out: Path, rows: list[dict[str, Any]], buckets: tuple[str, ...]) -> str:
    methods = list(dict.fromkeys(r["method"] for r in rows))
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / max(1, len(methods))
    for j, m in enumerate(methods):
        vals = [next((r.get("auc") for r in rows if r["method"] == m and r["split"] == b), None) for b in buckets]
        ax.bar([i + j * width for i in range(len(buckets))], [v if v is not None else 0 for v in vals],
               width=width, label=m)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(buckets))], buckets)
    ax.set_ylabel("AUC")
    ax.set_ylim(0.5, None)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "auc_by_history.png", dpi=110)
    plt.close(fig)
    return "auc_by_history.png"
