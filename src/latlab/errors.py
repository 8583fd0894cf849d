"""Exceptions of latlab.

Every error a user can cause (a bad reference, a corrupt file, an invalid table, ...) is a
:class:`LatlabError` whose message is one line naming the culprit. The CLI prints that line and
exits non-zero; it never shows a traceback for these.
"""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message, or its type's name when it has none: how a
    library's error is quoted in latlab's one-line messages."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class LatlabError(Exception):
    """Base class of every user-facing latlab error (one-line message)."""


class NetworkReferenceError(LatlabError, ValueError):
    """A network reference is malformed, uses an unknown scheme or names nothing."""


class OnnxImportError(LatlabError, ValueError):
    """An ONNX file is missing, corrupt, or its shapes cannot be determined."""


class FeatureError(LatlabError, ValueError):
    """Features of a network cannot be computed (unknown ops, wrong space for the encoder)."""


class DataError(LatlabError, ValueError):
    """A dataset table or training input is invalid (missing column, empty, mismatched)."""


class MeasurementError(LatlabError, RuntimeError):
    """A latency measurement could not be taken (backend missing, session failed)."""


class DriftError(MeasurementError):
    """A campaign's reference drifted beyond the bound set (what was measured is kept)."""


class StoreError(LatlabError, RuntimeError):
    """The measurement store cannot be opened or written."""


class NotFittedError(LatlabError, RuntimeError):
    """A predictor was asked to predict before it was fitted."""


class BundleError(LatlabError, ValueError):
    """A predictor bundle is missing, corrupt, or from a newer schema."""


class TargetError(LatlabError, ValueError):
    """A hardware target (BNN catalog entry, target file) is unknown or incomplete."""


class TrackingError(LatlabError, RuntimeError):
    """The MLflow tracking store or the Optuna study storage cannot be used."""


class PathError(LatlabError, ValueError):
    """An input or output path cannot be used (a folder where a file is wanted, unwritable)."""
