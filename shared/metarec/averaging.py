"""Polyak averaging of the weights during training: an exponential moving average (EMA) of the
parameters, the copy that validation checks see and training keeps.

Meta-training steps on 32 sampled users are noisy, and an early-stopped model is only as good as
the check that picked it: the raw weights' validation MAE on ML-1M moves by ±0.005 between checks,
so which check wins (and so the tested model) is partly luck, and so is the margin between seeds.
The average of the recent weights moves smoothly (docs/evaluation.md, "Weight averaging"). Built
on :class:`torch.optim.swa_utils.AveragedModel`; ``decay`` 0 turns it off (the raw weights, as
before), so an old ``best.json`` without ``ema`` trains exactly as it did.
"""

from __future__ import annotations

from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


class WeightAverage:
    """``avg ← decay · avg + (1 - decay) · θ`` after every optimizer step (buffers are not averaged:
    they hold fixed data such as item attributes)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"the weight average's decay must be in [0, 1), got {decay}")
        self.decay = decay
        self._avg = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay)) if decay > 0 else None

    def update(self, model: nn.Module) -> None:
        """Fold ``model``'s current parameters into the average (call after each optimizer step)."""
        if self._avg is not None:
            self._avg.update_parameters(model)

    def view(self, model: nn.Module) -> nn.Module:
        """What validation scores and early stopping keeps: the averaged copy, or ``model`` itself."""
        return self._avg.module if self._avg is not None else model

    def settle(self, model: nn.Module) -> None:
        """End of training: ``model`` takes the averaged weights (with early stopping, call after
        ``stop.finish(self.view(model), ...)``, which restored the best checked average)."""
        if self._avg is not None:
            model.load_state_dict(self._avg.module.state_dict())
