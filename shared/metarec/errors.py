"""Errors a user can cause and fix; the command line prints them as one line (exit status 2).

They live here, free of heavy imports, so ``metarec --help`` stays fast.
"""

from __future__ import annotations


class ArtifactError(ValueError):
    """A model directory that is missing, incomplete or inconsistent."""


class DataError(ValueError):
    """A data file that cannot be read as events; the message names the file and the line."""


class BrokerError(RuntimeError):
    """The broker cannot be reached or refused a request; the message says which and where."""


class DependencyError(RuntimeError):
    """An installed library at a version the worker's patches were not tested against."""
