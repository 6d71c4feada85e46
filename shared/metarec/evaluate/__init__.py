"""Evaluation: the MeLU cold-start and prequential protocols, baselines, metrics, report.

``metarec evaluate`` (:func:`metarec.evaluate.command.evaluate`) runs one protocol end to end:
load → split → validation search (Optuna) → test on held-out users/events → ``metrics.json``,
``report.md`` and plots.
"""
