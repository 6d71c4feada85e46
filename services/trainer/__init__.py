"""``metarec trainer``: continual meta-learning from the events topic (see :mod:`services.trainer.app`)."""
