"""New items enter the catalog: a grown copy of the model, their embeddings started at the mean.

An item the model has never seen scores as the "unknown item" (index 0) and cannot be ranked: it
has no column of its own. :func:`grow` gives each new id a row, started at the mean of the known
items' embedding (and bias) rows, so the item is recommendable at once and meta-training on the
window moves it from there. Item attributes are not known for live items (their attribute ids are
0, padding: the id embedding alone).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch

from metarec.events import Event
from metarec.model import ModelConfig, RecModel, Vocab


def grow(model: RecModel, vocab: Vocab, events: Iterable[Event]) -> tuple[RecModel, Vocab, list[str]]:
    """A copy of ``model`` and ``vocab`` that also know the items of ``events`` (each in the domain
    it was first seen in); returns the ids added."""
    seen = Vocab.of_events([], (e for e in events if not vocab.item(e.item_id)))
    new = seen.items
    if not new:
        return copy.deepcopy(model), Vocab(list(vocab.users), list(vocab.items), list(vocab.item_domains)), []
    old_n = model.cfg.n_items
    cfg = ModelConfig(**{**model.cfg.__dict__, "n_items": old_n + len(new)})
    grown = RecModel(cfg)
    state = model.state_dict()
    target = grown.state_dict()
    with torch.no_grad():
        for name, value in state.items():
            t = target[name]
            if t.shape == value.shape:
                t.copy_(value)
                continue
            # an item-indexed table: the known rows, then the new ones at the known rows' mean
            t[:old_n] = value
            if t.dtype.is_floating_point:
                t[old_n:] = value[1:].mean(0) if old_n > 1 else 0.0
            else:
                t[old_n:] = 0
    grown.load_state_dict(target)
    grown.train(model.training)
    domains = ([*(vocab.item_domains or [""] * len(vocab.items)), *(seen.item_domains or [""] * len(new))]
               if vocab.item_domains or seen.item_domains else [])
    return grown, Vocab(list(vocab.users), [*vocab.items, *new], domains), new
