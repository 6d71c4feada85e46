"""Continual meta-learning: the initialization keeps learning from the stream (issue 15).

:mod:`.window` keeps recent users' events, :mod:`.catalog` lets new items into the model,
:mod:`.gate` judges a candidate against the serving version on the newest users' events, and
:mod:`.rounds` is one round: warm-started meta-training on the window, then the gate. The
service around them (Kafka, publishing) is :mod:`services.trainer`.
"""
