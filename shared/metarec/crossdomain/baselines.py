"""The non-neural baselines and EMCDR's mapping, on a :class:`~.data.Pair`.

- :func:`popularity`: target training lines per item.
- :class:`CrossKNN`: item-to-item co-occurrence through the bridge users (who bought source item
  ``i`` and target item ``j``), plus, once the user has target events, target-to-target
  co-occurrence; ``pop^-alpha`` damps popular items; popularity breaks ties.
- :func:`emcdr_map`: EMCDR (Man et al., IJCAI 2017): an MLP from a user's source-domain vector
  (embedding and bias) to their target-domain one, fitted on the bridge users.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from metarec.crossdomain.data import SOURCE, TARGET, Pair


def popularity(pair: Pair) -> np.ndarray:
    """``(n_items,)`` target training lines per item (joint indices)."""
    t = pair.train[pair.train[:, 2] == TARGET]
    return np.bincount(t[:, 1], minlength=pair.n_items).astype(np.float64)


def _matrix(pair: Pair, rows: np.ndarray, users: np.ndarray) -> sp.csr_matrix:
    """Binary users × joint items matrix of ``rows (N, >=2) [user, item]`` restricted to ``users``."""
    pos = {u: r for r, u in enumerate(users.tolist())}
    sel = np.isin(rows[:, 0], users)
    r = rows[sel]
    m = sp.csr_matrix((np.ones(len(r)), ([pos[u] for u in r[:, 0].tolist()], r[:, 1])),
                      shape=(len(users), pair.n_items))
    m.data[:] = 1.0
    return m


class CrossKNN:
    def __init__(self, pair: Pair, alpha: float = 0.0) -> None:
        self.pair, self.alpha = pair, alpha
        tr = pair.train
        bridge = pair.bridge_users()
        xb = _matrix(pair, tr, bridge)
        tgt_users = np.unique(tr[tr[:, 2] == TARGET, 0])
        xt = _matrix(pair, tr[tr[:, 2] == TARGET], tgt_users)
        self.pop = popularity(pair)
        damp = sp.diags(1.0 / np.maximum(np.asarray(xb.sum(0)).ravel(), 1.0) ** alpha)
        self.cross = (damp @ (xb.T @ xb)).tocsr()  # item × item among bridge users
        self.within = (sp.diags(1.0 / np.maximum(self.pop, 1.0) ** alpha) @ (xt.T @ xt)).tocsr()

    def _bag(self, sets: list[np.ndarray]) -> sp.csr_matrix:
        rows = np.repeat(np.arange(len(sets)), [len(s) for s in sets])
        cols = np.concatenate(sets) if sets else np.zeros(0, np.int64)
        return sp.csr_matrix((np.ones(len(cols)), (rows, cols)), shape=(len(sets), self.pair.n_items))

    def raw(self, source: list[np.ndarray], target: list[np.ndarray],
            cands: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(L, C)`` each: the candidates' (damped) co-occurrence with each line's source items,
        through the bridge users, and with its given target items, through the target users."""
        cross, within = np.empty(cands.shape, np.float64), np.empty(cands.shape, np.float64)
        for a in range(0, len(cands), 256):
            sl = slice(a, a + 256)
            cross[sl] = np.take_along_axis((self._bag(source[sl]) @ self.cross).toarray(), cands[sl], 1)
            within[sl] = np.take_along_axis((self._bag(target[sl]) @ self.within).toarray(), cands[sl], 1)
        return cross, within

    def scores(self, source: list[np.ndarray], target: list[np.ndarray], cands: np.ndarray) -> np.ndarray:
        """Per line: its user's source items and given target items → ``(L, C)`` scores of ``cands``."""
        cross, within = self.raw(source, target, cands)
        return cross + within + 1e-3 * np.log1p(self.pop[cands]) / np.log1p(self.pop.max())

def emcdr_map(src_vec: np.ndarray, tgt_vec: np.ndarray, seed: int, epochs: int = 400) -> nn.Module:
    """An MLP ``source vector → target vector`` fitted by MSE on the bridge users (10 % held out for
    early stopping)."""
    torch.manual_seed(seed)
    x, y = torch.from_numpy(src_vec).float(), torch.from_numpy(tgt_vec).float()
    perm = torch.randperm(len(x))
    n_val = max(1, len(x) // 10)
    va, trn = perm[:n_val], perm[n_val:]
    d = x.shape[1]
    f = nn.Sequential(nn.Linear(d, 2 * d), nn.Tanh(), nn.Linear(2 * d, y.shape[1]))
    opt = torch.optim.Adam(f.parameters(), lr=3e-3)
    best, state, bad = float("inf"), None, 0
    for _ in range(epochs):
        with torch.enable_grad():  # also when called from a validation check (no_grad)
            loss = ((f(x[trn]) - y[trn]) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            v = float(((f(x[va]) - y[va]) ** 2).mean())
        if v < best - 1e-6:
            best, state, bad = v, {k: t.clone() for k, t in f.state_dict().items()}, 0
        else:
            bad += 1
            if bad >= 30:
                break
    if state is not None:
        f.load_state_dict(state)
    return f.eval()


__all__ = ["SOURCE", "CrossKNN", "emcdr_map", "popularity"]
