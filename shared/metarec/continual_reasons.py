"""Why the trainer's gate discards a candidate (a closed set: the labels of a metric). Torch-free."""

REJECT_REASONS = ("not_better", "too_few_users", "not_finite", "failed")
