"""Helpers shared by the learned predictors: the latency target, validation splits, threads.

**Target.** Latencies are positive and span orders of magnitude (a 10 µs MLP, a 100 ms CNN),
and what users judge is the *relative* error (±10 % accuracy, MAPE). Every learned predictor
therefore fits ``log(latency)`` by default (``target="log"``): a squared or absolute error on
the log is, to first order, a squared or absolute *relative* error, and predictions
``exp(·)`` are positive by construction. ``target="raw"`` fits milliseconds directly (the FCNN
estimator paper's MSE on the latency) for comparison.
"""

from __future__ import annotations

import os

import numpy as np

from latlab.errors import DataError

TARGETS = ("log", "raw")


def check_target(target: str) -> str:
    if target not in TARGETS:
        raise DataError(f"target must be one of {TARGETS}, got {target!r}")
    return target


def encode_target(y_ms: np.ndarray, target: str) -> np.ndarray:
    """Latencies (ms, > 0) to the scale the model is fitted on."""
    y = np.asarray(y_ms, dtype=np.float64)
    return np.log(y) if check_target(target) == "log" else y.copy()


def decode_target(z: np.ndarray, target: str) -> np.ndarray:
    """Inverse of :func:`encode_target` (model outputs to ms)."""
    z = np.asarray(z, dtype=np.float64)
    return np.exp(z) if check_target(target) == "log" else z


def internal_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/validation indices for early stopping when no ``eval_set`` is given.

    With fewer than 10 rows there is nothing to hold out: both index sets are all rows (the
    model then stops on its training loss).
    """
    if not 0 < fraction < 1:
        raise DataError(f"val_fraction must be in (0, 1), got {fraction!r}")
    idx = np.arange(n)
    if n < 10:
        return idx, idx
    perm = np.random.default_rng(seed).permutation(n)
    n_val = max(1, round(fraction * n))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def usable_cpus() -> int:
    """CPUs this process may run on (the affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def resolve_n_jobs(n_jobs: int | None) -> int:
    """``None`` -> every usable CPU; a positive count as given; others refused."""
    if n_jobs is None:
        return usable_cpus()
    if int(n_jobs) < 1:
        raise DataError(f"n_jobs must be >= 1 or None, got {n_jobs!r}")
    return int(n_jobs)
