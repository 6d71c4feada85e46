"""Amortized cross-domain adaptation: a user's support set encoded into their vector in one pass.

A neural-process-style meta-learner (issue 12, item 5; issue 16): a *task* is a user arriving in
the target domain; its *support set* is their source-domain history plus the ``k`` target events
seen so far; the *query* is their next target items. Instead of gradient steps, the support set is
encoded in one forward pass: each event is its item's embedding plus its domain's, mean-pooled and
mapped by a small MLP to the user's target-domain vector; an item scores ``<u, e_item> + b_item``.
Trained episodically on the bridge users (shared users with training lines in both domains), the
way it will be used on cold-start users, with early stopping on the validation users.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from metarec.crossdomain.baselines import CrossKNN
from metarec.crossdomain.data import SOURCE, TARGET, Pair
from metarec.stopping import EarlyStopping, step_and_check


@dataclass(frozen=True)
class EncoderConfig:
    dim: int = 64
    hidden: int = 128
    buffer: int = 50  # support events at most
    max_k: int = 3  # target events an episode's support may hold (drawn 0 .. max_k)
    dropout: float = 0.2  # chance each support event is dropped in training (a regularizer)
    memory: bool = True  # also score with co-occurrence counts (a kNN memory), weighted by a learned net
    embed: bool = True  # score with the encoded user vector (False: the memory alone, learned weighting)
    lr: float = 5e-4  # Adam's learning rate


class HistoryEncoder(nn.Module):
    def __init__(self, n_items: int, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.knn: CrossKNN | None = None  # the memory (set by train_encoder when cfg.memory)
        self.item_emb = nn.Embedding(n_items, cfg.dim, padding_idx=0)  # scored items
        self.hist_emb = nn.Embedding(n_items, cfg.dim, padding_idx=0)  # support items (FISM-style: two tables)
        self.item_bias = nn.Embedding(n_items, 1)
        self.domain_emb = nn.Embedding(2, cfg.dim)
        self.net = nn.Sequential(nn.Linear(cfg.dim, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, cfg.dim))
        # memory features of a candidate (cross-domain and within-target co-occurrence with the support,
        # popularity) and the support's size → its memory score: how far to trust the counts
        self.gate = nn.Sequential(nn.Linear(N_FEATURES, 16), nn.ReLU(), nn.Linear(16, 1))
        nn.init.normal_(self.item_emb.weight, std=0.05)
        nn.init.normal_(self.hist_emb.weight, std=0.05)
        nn.init.zeros_(self.item_bias.weight)
        nn.init.normal_(self.domain_emb.weight, std=0.05)

    def user_vec(self, items: Tensor, domains: Tensor, mask: Tensor) -> Tensor:
        """Support sets ``(B, S)`` (items, domain codes, 1/0 mask) → ``(B, D)`` target-domain user vectors."""
        e = self.hist_emb(items) + self.domain_emb(domains)
        pooled = (e * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1.0)
        return pooled + self.net(pooled)

    def scores(self, support: tuple[Tensor, Tensor, Tensor], cands: Tensor, feats: Tensor | None = None) -> Tensor:
        """Padded support sets (:func:`pad`), ``cands (B, C)``, memory features ``(B, C, N_FEATURES)``
        → logits ``(B, C)``. Without ``cfg.embed`` the support is not encoded at all."""
        z = torch.zeros(cands.shape)
        if self.cfg.embed:
            u = self.user_vec(*support)
            z = (self.item_emb(cands) * u[:, None, :]).sum(-1) + self.item_bias(cands).squeeze(-1)
        if self.cfg.memory:
            assert feats is not None, "a memory encoder scores with memory features"
            z = z + self.gate(feats).squeeze(-1)
        return z


N_FEATURES = 5


def memory_features(knn: CrossKNN, sets: list[tuple[np.ndarray, np.ndarray]], cands: np.ndarray,
                    own: list[np.ndarray] | None = None) -> Tensor:
    """``(B, C, 5)``: log1p of each candidate's co-occurrence with the support's source items (bridge
    users) and target items (target users), of its popularity, and of the support's two sizes.
    ``own[b]``: training user ``b``'s target items, whose own lines the counts then leave out
    (leave-one-out: a user must not find themselves in the memory)."""
    src = [i[d == SOURCE] for i, d in sets]
    tgt = [i[d == TARGET] for i, d in sets]
    cross, within = knn.raw(src, tgt, cands)
    pop = knn.pop[cands].copy()
    n_src = np.array([len(x) for x in src], np.float64)[:, None]
    n_tgt = np.array([len(x) for x in tgt], np.float64)[:, None]
    if own is not None:
        mine = np.stack([np.isin(c, o) for c, o in zip(cands, own)])
        cross = np.where(mine, np.maximum(cross - n_src, 0.0), cross)
        within = np.where(mine, np.maximum(within - n_tgt, 0.0), within)
        pop = np.where(mine, np.maximum(pop - 1.0, 0.0), pop)
    shape = cands.shape
    f = np.stack([np.log1p(cross), np.log1p(within), np.log1p(pop),
                  np.broadcast_to(np.log1p(n_src), shape), np.broadcast_to(np.log1p(n_tgt), shape)], -1)
    return torch.from_numpy(f.astype(np.float32))


def pad(sets: list[tuple[np.ndarray, np.ndarray]], width: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Support sets as (items, domains) pairs → padded ``(B, S)`` items, domains, mask."""
    s = width or max(1, max(len(i) for i, _ in sets))
    items, doms, mask = (np.zeros((len(sets), s), np.int64) for _ in range(3))
    for b, (i, d) in enumerate(sets):
        n = min(len(i), s)
        items[b, :n], doms[b, :n], mask[b, :n] = i[:n], d[:n], 1
    return torch.from_numpy(items), torch.from_numpy(doms), torch.from_numpy(mask).float()


def support_set(source: np.ndarray, target: np.ndarray, buffer: int) -> tuple[np.ndarray, np.ndarray]:
    """A support set: the latest ``buffer`` source items, then the given target items."""
    src = source[-max(0, buffer - len(target)):] if buffer > len(target) else source[:0]
    return np.concatenate([src, target]), np.concatenate([np.full(len(src), SOURCE), np.full(len(target), TARGET)])


def episodes(pair: Pair, users: np.ndarray, src: dict[int, np.ndarray], tgt: dict[int, np.ndarray],
             cfg: EncoderConfig, rng: np.random.Generator, n_neg: int,
             ) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray]:
    """One episode per user: support (source history with event dropout + k target items), and
    candidates ``(B, 1 + n_neg)``: a held-out target item, then random target items."""
    sets, pos = [], []
    for u in users.tolist():
        t = rng.permutation(tgt[u])
        s = src.get(u, t[:0])
        lo = 0 if len(s) else 1  # a user with no source history needs a target event to go on
        k = int(rng.integers(lo, min(cfg.max_k, len(t) - 1) + 1))
        keep = rng.random(len(s)) >= cfg.dropout
        sets.append(support_set(s[keep] if keep.any() else s, t[:k], cfg.buffer))
        pos.append(t[k])
    neg = pair.target_items[rng.integers(0, len(pair.target_items), (len(users), n_neg))]
    return sets, np.concatenate([np.array(pos)[:, None], neg], 1)


def train_encoder(pair: Pair, src: dict[int, np.ndarray], tgt: dict[int, np.ndarray], users: np.ndarray,
                  cfg: EncoderConfig, seed: int, stop: EarlyStopping | None, steps: int = 20000,
                  batch: int = 128, n_neg: int = 64, memory: CrossKNN | None = None) -> HistoryEncoder:
    """Episodic training on ``users`` (each with source history and >= 1 target item); softmax over
    the held-out item and the sampled ones. ``stop``: :class:`metarec.stopping.EarlyStopping`.
    ``memory``: the raw-count (``alpha = 0``) :class:`CrossKNN` of ``pair`` when the caller has one
    (built here otherwise, when ``cfg.memory``)."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    model = HistoryEncoder(pair.n_items, cfg)
    knn = (memory or CrossKNN(pair)) if cfg.memory else None
    model.knn = knn
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    step = 0
    for step in range(1, steps + 1):
        model.train()
        picked = rng.choice(users, batch)
        sets, cands = episodes(pair, picked, src, tgt, cfg, rng, n_neg)
        feats = memory_features(knn, sets, cands, [tgt[u] for u in picked.tolist()]) if knn else None
        logits = model.scores(pad(sets), torch.from_numpy(cands), feats)
        loss = nn.functional.cross_entropy(logits, torch.zeros(len(cands), dtype=torch.long))
        if step_and_check(opt, loss, stop, model, step):
            break
    if stop is not None:
        stop.finish(model, step)
    return model.eval()


def encoder_scores(model: HistoryEncoder, sets: list[tuple[np.ndarray, np.ndarray]], cands: np.ndarray) -> np.ndarray:
    out = []
    with torch.no_grad():
        for a in range(0, len(sets), 256):
            part, c = sets[a:a + 256], cands[a:a + 256]
            feats = memory_features(model.knn, part, c) if model.knn is not None else None
            out.append(model.scores(pad(part, model.cfg.buffer), torch.from_numpy(c), feats))
    return torch.cat(out).numpy()
