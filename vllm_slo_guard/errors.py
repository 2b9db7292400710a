"""Typed errors a user or the environment can cause.

Each subclass's ``str()`` is the whole one-line message shown to the user; the CLI maps any
``SloGuardError`` to that line and a non-zero exit. Configuration crashes of a trial are *data*
(an ``Outcome``), never exceptions.
"""

from __future__ import annotations


class SloGuardError(Exception):
    """Base class of every error vllm-tune reports as one clear line."""


class InputError(SloGuardError):
    """Bad user input: a malformed SLO, size or duration, an unknown option value."""


class ModelNotFoundError(SloGuardError):
    """The model is neither a local folder with a config.json, in the local HF cache, nor in the catalog."""


class UnknownGpuError(SloGuardError):
    """The simulated GPU name is not in the catalog."""


class DatasetError(SloGuardError):
    """A dataset file is missing, unreadable or in the wrong format."""
