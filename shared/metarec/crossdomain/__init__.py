"""Cross-domain cold start (issue 16): a user known in one domain arrives in another.

:mod:`.data` reads a pair of domains with shared users (the Amazon pairs of the CDRIB paper, ICDE
2022) into one joint index space; :mod:`.ranking` scores a held-out item against 999 sampled
negatives (MRR, NDCG@k, HR@k, ties broken at random in expectation); :mod:`.methods` trains the
baselines and the meta-learner on the one model definition (:class:`metarec.model.RecModel`, the
domain as a context feature); :mod:`.protocol` runs ``metarec evaluate --protocol cross-domain``.
"""
