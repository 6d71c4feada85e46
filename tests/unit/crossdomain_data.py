"""A tiny synthetic pair of domains, written as the Amazon cross-domain folders are.

Users 0..39 are shared; 0..29 are bridge users (lines in both domains), 30..39 the cold-start
users of the target domain ``music`` (source history in ``books``, target lines only in
valid/test). Each user belongs to one of four tastes; a taste's users pick items of that taste
in both domains, so a user's source history says which target items they will pick.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

N_SHARED, N_BRIDGE, TASTES = 40, 30, 4


def write_pair(root: Path, seed: int = 0, items: int = 60) -> Path:
    rng = np.random.default_rng(seed)
    per = items // TASTES
    lines: dict[str, dict[str, list[str]]] = {d: {s: [] for s in ("train", "valid", "test")} for d in ("music", "books")}

    def pick(u: int, n: int) -> list[int]:
        t = u % TASTES
        return sorted(set((t * per + rng.integers(0, per, n)).tolist()))

    for u in range(N_SHARED + 20):  # 40 shared, then 20 users of one domain only (per folder)
        for dom in ("music", "books"):
            got = pick(u, 8)
            if u >= N_BRIDGE and u < N_SHARED and dom == "music":  # cold start in music
                half = len(got) // 2
                lines[dom]["valid"] += [f"{u}\t{i}" for i in got[:half]]
                lines[dom]["test"] += [f"{u}\t{i}" for i in got[half:]]
            else:
                lines[dom]["train"] += [f"{u}\t{i}" for i in got]
    for dom, other in (("music", "books"), ("books", "music")):
        folder = root / f"{dom}_{other}"
        folder.mkdir(parents=True)
        for split, ls in lines[dom].items():
            (folder / f"{split}.txt").write_text("\n".join(ls) + ("\n" if ls else ""))
        (folder / "data_info.txt").write_text(f"common user num {N_SHARED}\n")
    return root / "music_books"
