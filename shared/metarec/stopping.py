"""Early stopping on held-out validation users: training length chosen by the data, not a budget.

Meta-training (:func:`metarec.meta.meta_train`) and the global model's supervised training
(:func:`metarec.evaluate.models.fit_global`) both call :meth:`EarlyStopping.check` every
``every`` steps with the step count. It scores the model on validation users
(``validate(model) -> float``, lower is better, e.g. adapted MAE), keeps a copy of the best
weights, and says stop once ``patience`` checks in a row failed to improve on the best by more
than ``min_delta``. With ``smooth`` > 1 a check is judged by the mean of the last ``smooth``
validation losses (the checks are noisy: one lucky check must not end training, nor win it); the
weights kept are those of the best window's last check. :meth:`EarlyStopping.finish` checks the
last weights and loads the best back. The curve, the
best step and why training stopped (``patience``, ``cap``: the step limit was reached while
still improving, or ``time``: a time budget cut it short) go into the report, so a cap that
under-trains is visible instead of silent.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

Validate = Callable[[nn.Module], float]


@dataclass
class EarlyStopping:
    """Validation checks every ``every`` steps; stop after ``patience`` checks without improvement."""

    validate: Validate  # model -> validation loss (lower is better); called in no_grad, eval mode
    every: int  # steps between checks (>= 1)
    patience: int  # checks without an improvement before stopping (>= 1)
    min_delta: float = 0.0  # an improvement must beat the best by more than this
    smooth: int = 1  # judge a check by the mean of the last `smooth` validation losses
    curve: list[tuple[int, float]] = field(default_factory=list)  # (step, validation loss) per check
    best_step: int = 0  # step of the best check (0: none yet)
    best_value: float = math.inf
    stopped_by: str = "cap"  # "patience" | "cap" | "time"
    _best_state: dict[str, Any] | None = field(default=None, repr=False)
    _bad: int = 0

    def __post_init__(self) -> None:
        if self.every < 1 or self.patience < 1 or self.smooth < 1:
            raise ValueError("early stopping needs every >= 1, patience >= 1 and smooth >= 1, "
                             f"got {self.every}, {self.patience}, {self.smooth}")

    def due(self, step: int) -> bool:
        """True when ``step`` (1-based steps done) is a check step."""
        return step % self.every == 0

    def check(self, model: nn.Module, step: int) -> bool:
        """Score ``model`` after ``step`` steps, remember it if best; True means stop now."""
        was_training = model.training
        model.eval()
        with torch.no_grad():
            value = float(self.validate(model))
        model.train(was_training)
        self.curve.append((step, value))
        recent = [v for _, v in self.curve[-self.smooth:]]
        judged = sum(recent) / len(recent)
        if judged < self.best_value - self.min_delta:
            self.best_value, self.best_step, self._bad = judged, step, 0
            self._best_state = copy.deepcopy(model.state_dict())
        else:
            self._bad += 1
        if self._bad >= self.patience:
            if self.stopped_by == "cap":
                self.stopped_by = "patience"
            return True
        return False

    def finish(self, model: nn.Module, steps_done: int) -> None:
        """End of training after ``steps_done`` steps: check the last weights too (unless that step
        was just checked), then restore the best checked ones."""
        if steps_done and (not self.curve or self.curve[-1][0] != steps_done):
            self.check(model, steps_done)
        self.restore(model)

    def restore(self, model: nn.Module) -> None:
        """Load the best checked weights into ``model`` (a no-op before the first check)."""
        if self._best_state is not None:
            model.load_state_dict(self._best_state)

    def summary(self) -> dict[str, Any]:
        """JSON-ready: steps at the best check, its (smoothed) loss, why training stopped, the raw validation curve."""
        return {"best_step": self.best_step, "best_value": self.best_value, "stopped_by": self.stopped_by,
                "smooth": self.smooth, "steps_run": self.curve[-1][0] if self.curve else 0,
                "curve": [[s, v] for s, v in self.curve]}


def step_and_check(opt: torch.optim.Optimizer, loss: torch.Tensor, stop: EarlyStopping | None, model: nn.Module,
                   step: int) -> bool:
    """One optimizer step on ``loss``; then, on a check step, the check: True means stop training."""
    opt.zero_grad()
    loss.backward()
    opt.step()
    return stop is not None and stop.due(step) and stop.check(model, step)
