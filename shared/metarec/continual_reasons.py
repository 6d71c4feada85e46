"""Why the trainer discards a candidate (a closed set: the labels of a metric). Torch-free.

``not_better``, ``too_few_users``, ``not_finite``: the gate's verdicts (:mod:`metarec.continual.gate`);
``superseded``: the served version changed while the round trained (a rollback), so the candidate's
parent is no longer what is served; ``failed``: the round raised.
"""

REJECT_REASONS = ("not_better", "too_few_users", "not_finite", "superseded", "failed")
