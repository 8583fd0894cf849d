"""Per-epoch reports of epoch-based predictors, for pruning during tuning.

Tuning prunes unpromising trials of epoch-based predictors (FCNN, GCN) with Optuna's Hyperband
pruner, which needs the validation loss after every epoch. Rather than a constructor parameter
(which would be saved with the predictor and copied by ``sklearn.base.clone``), the tuner
installs a callback for the duration of one ``fit`` with :func:`epoch_callback`, and an epoch
loop calls :func:`report_epoch` after each epoch. The callback may raise (Optuna's
``TrialPruned``) to stop training; the exception leaves ``fit``.

The callback lives in a context variable: it applies to the thread (or asyncio task) that set
it, so trials fitted in parallel threads report to their own trial.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar

#: ``callback(epoch, val_loss)``: epoch counted from 0, the loss the loop early-stops on.
EpochCallback = Callable[[int, float], None]

_CALLBACK: ContextVar[EpochCallback | None] = ContextVar("latlab_epoch_callback", default=None)


@contextlib.contextmanager
def epoch_callback(callback: EpochCallback | None) -> Iterator[None]:
    """Within this context, epoch-based predictors call ``callback(epoch, val_loss)``."""
    token = _CALLBACK.set(callback)
    try:
        yield
    finally:
        _CALLBACK.reset(token)


def report_epoch(epoch: int, val_loss: float) -> None:
    """Called by epoch loops after every epoch with its validation loss (no-op without a
    callback)."""
    callback = _CALLBACK.get()
    if callback is not None:
        callback(int(epoch), float(val_loss))
