"""The ``context`` suite: generated networks whose kernels are timed in context, sampled adaptively.

Kernel times measured inside networks (warm caches from the previous kernel, the layouts the
runtime chooses within a graph) are what the kernel-level predictor needs; isolated
single-layer benchmarks miss both. The suite measures generated networks only -- ``block:``
CNN and transformer blocks (:mod:`latlab.datasets.spaces.blocks`) and a share of ``cnn:``
chains -- never a real (``zoo:``) network.

Sampling follows nn-Meter's adaptive scheme: a seeded initial sample (half the count) is
measured first; then, round by round, a pool of fresh candidates is scored by how uncertain
the current kernel data leaves them -- per kernel family an ensemble of randomized trees on log
kernel time, a candidate's score the spread (std over trees of the log prediction) of its
kernels weighted by their predicted share of the network's time, plus a bonus for kernel
families no model covers yet -- and the highest-scoring candidates are measured next. The
selection depends only on stored data, so a resumed campaign continues where it stopped.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from latlab.errors import MeasurementError

log = logging.getLogger(__name__)

#: Default size of the context suite (networks).
DEFAULT_CONTEXT_COUNT = 240
#: Share of ``cnn:`` chains in the suite (the rest are ``block:`` networks).
CNN_SHARE = 0.12
#: Cap on a ``cnn:`` chain's MACs (full-size chains can take seconds per run).
CNN_MAX_MACS = 6e8
#: Kernel families with fewer points than this count as uncovered when scoring candidates
#: (the kernel predictor's own ``min_points``: below it a family is costed by the fallback).
MIN_FAMILY_POINTS = 12


def _cnn_chains(count: int, seed: int) -> list[str]:
    from latlab.datasets.references import resolve
    from latlab.datasets.spaces import sample

    out: list[str] = []
    for ref in sample("cnn", max(4 * count, 8), seed + 31):
        if len(out) >= count:
            break
        if resolve(ref).totals.macs <= CNN_MAX_MACS:
            out.append(ref)
    return out


def context_pool(count: int, seed: int = 0) -> list[str]:
    """``count`` seeded candidates: blocks and (a share :data:`CNN_SHARE`) ``cnn:`` chains."""
    from latlab.datasets.spaces.blocks import sample_blocks

    n_cnn = round(count * CNN_SHARE)
    blocks = sample_blocks(count - n_cnn, seed)
    chains = _cnn_chains(n_cnn, seed)
    # interleave so any prefix of the list mixes both kinds
    out: list[str] = []
    step = max(1, len(blocks) // max(len(chains), 1))
    ci = 0
    for i, ref in enumerate(blocks):
        out.append(ref)
        if ci < len(chains) and (i + 1) % step == 0:
            out.append(chains[ci])
            ci += 1
    out.extend(chains[ci:])
    return out


def initial_references(count: int, seed: int = 0) -> list[str]:
    """The seeded first half of the suite (measured before any adaptive round)."""
    return context_pool(max(1, count // 2), seed)


def _log_features(features: list[dict[str, float]], names: Sequence[str]) -> np.ndarray:
    return np.log1p(np.array([[max(f.get(k, 0.0), 0.0) for k in names] for f in features]))


def _fit_ensembles(kernels: list[dict[str, Any]], times_us: np.ndarray, seed: int) -> dict:
    from sklearn.ensemble import ExtraTreesRegressor

    from latlab.datasets.bench.kernels_runtime import FEATURES

    by: dict[str, list[int]] = defaultdict(list)
    for i, k in enumerate(kernels):
        by[k["family"]].append(i)
    models: dict[str, Any] = {}
    for fam, idx in by.items():
        if len(idx) < MIN_FAMILY_POINTS:
            continue
        x = _log_features([kernels[i]["features"] for i in idx], FEATURES)
        y = np.log(np.maximum(times_us[idx], 0.05))
        models[fam] = ExtraTreesRegressor(
            n_estimators=24, min_samples_leaf=2, random_state=seed, n_jobs=1
        ).fit(x, y)
    return models


def candidate_scores(
    candidates: Sequence[str],
    kernels: list[dict[str, Any]],
    times_us: np.ndarray,
    *,
    seed: int = 0,
) -> np.ndarray:
    """Uncertainty score of each candidate network given measured kernels (see module doc).

    ``kernels`` are stored kernel records (``family``, ``features``) and ``times_us`` their
    profiled times. A candidate onnxruntime cannot run scores -inf (never chosen).
    """
    from latlab.datasets.bench.kernels_runtime import FEATURES, runtime_kernels

    models = _fit_ensembles(kernels, np.asarray(times_us, dtype=float), seed)
    scores = np.full(len(candidates), -np.inf)
    # every candidate's kernels, then one batched prediction per family
    owners: dict[str, list[tuple[int, dict[str, float]]]] = defaultdict(list)
    total = np.zeros(len(candidates))
    weighted = np.zeros(len(candidates))
    unseen = np.zeros(len(candidates))
    ok = np.zeros(len(candidates), dtype=bool)
    for ci, ref in enumerate(candidates):
        try:
            ks = runtime_kernels(ref)
        except MeasurementError as exc:
            log.warning("candidate %s skipped: %s", ref, exc)
            continue
        ok[ci] = True
        for k in ks:
            owners[k.family].append((ci, k.features))
    for fam, items in owners.items():
        idx = np.array([ci for ci, _ in items])
        model = models.get(fam)
        if model is None:  # an uncovered family: a 1 us kernel with full uncertainty
            np.add.at(total, idx, 1.0)
            np.add.at(weighted, idx, 1.0)
            np.add.at(unseen, idx, 1.0)
            continue
        x = _log_features([f for _, f in items], FEATURES)
        per_tree = np.stack([t.predict(x) for t in model.estimators_])
        t_us = np.exp(per_tree.mean(axis=0))
        np.add.at(total, idx, t_us)
        np.add.at(weighted, idx, t_us * per_tree.std(axis=0))
    scores[ok] = weighted[ok] / np.maximum(total[ok], 1e-9) + 0.05 * unseen[ok]
    return scores


def next_round(
    measured: set[str],
    kernels: list[dict[str, Any]],
    times_us: np.ndarray,
    want: int,
    round_no: int,
    seed: int = 0,
    pool_factor: int = 3,
) -> list[str]:
    """The ``want`` most uncertain candidates of a fresh pool (seeded by the round number)."""
    pool = [r for r in context_pool(pool_factor * want, seed + 1000 * (round_no + 1))
            if r not in measured]  # fmt: skip
    if not pool:
        return []
    scores = candidate_scores(pool, kernels, times_us, seed=seed)
    order = np.argsort(-scores, kind="stable")
    return [pool[i] for i in order[:want] if np.isfinite(scores[i])]
