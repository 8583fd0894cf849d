"""The learned network-level predictors in ANNETTE's comparison, trained on this machine.

The layer-wise models learn from kernel benchmarks; the learned predictors (FLOPs proxy,
LightGBM, random forest, FCNN, GCN) need whole networks measured on the same machine. This
module draws them from the generated spaces -- ``cnn:`` chains (MobileNet/ResNet/VGG-style,
the closest generated relatives of the zoo) and ``nb201`` cells -- splits them into train,
validation and held-out test networks, fits each predictor on the training networks only and
predicts the held-out generated networks, the held-out nb201 networks and the zoo. The zoo is
out of distribution for the learned predictors (hand-designed architectures at 224 px, none of
them in the training spaces): the comparison says so rather than hiding it.

Fitted predictions are kept in ``learned.jsonl`` in the output folder (one line per predictor,
keyed by its settings and training set), so an interrupted run does not train twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from latlab.experiments.common import RunLog, config_hash

log = logging.getLogger("latlab.experiments.annette")

#: Learned predictors of the comparison, in table order.
LEARNED = ("flops", "gbm", "rf", "fcnn", "gcn")


@dataclass(frozen=True)
class Split:
    """Generated networks for the learned predictors: fit on ``train``, stop on ``val``."""

    train: list[str]
    val: list[str]
    test: list[str]


def split_generated(refs: Sequence[str], seed: int, test: float = 0.2, val: float = 0.1) -> Split:
    """A seeded random split of generated networks (every network in exactly one part)."""
    rng = np.random.default_rng(seed)
    order = [refs[i] for i in rng.permutation(len(refs))]
    n_test = round(test * len(order))
    n_val = max(1, round(val * len(order)))
    return Split(order[n_test + n_val :], order[n_test : n_test + n_val], order[:n_test])


def predictor_params(name: str, threads: int, seed: int, gcn_epochs: int) -> dict[str, Any]:
    """Constructor parameters: documented defaults, thread counts bounded, seeded.

    Mixed families (cnn + nb201) make ``features="auto"`` choose the 27-value network summary
    and ``graph="auto"`` the generic layer graph, which also apply to the zoo.
    """
    params: dict[str, Any] = {}
    if name in ("gbm", "rf", "fcnn"):
        params = {"n_jobs": threads, "random_state": seed}
    elif name == "gcn":
        # 600 hidden units is BRP-NAS's size for 10k cells; a 150-network training set on a
        # 2-core machine gets a quarter of it and fewer epochs (timed, see docs/main_job.md).
        params = {
            "n_jobs": threads,
            "random_state": seed,
            "hidden": 150,
            "max_epochs": gcn_epochs,
            "patience": 25,
        }
    return params


def fit_and_predict(
    names: Sequence[str],
    train: tuple[list[str], np.ndarray],
    val: tuple[list[str], np.ndarray],
    targets: dict[str, list[str]],
    out: Path,
    *,
    threads: int = 1,
    seed: int = 0,
    gcn_epochs: int = 120,
    progress: Callable[[str, int, int | None], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """``{predictor: {"seconds": fit time, "pred": {set: [ms per network]}}}``.

    Each predictor is fitted on ``train`` with ``val`` for early stopping and predicts every
    list of ``targets``; finished predictors are read back from ``out/learned.jsonl``.
    """
    from latlab.predictors import make_predictor

    runs = RunLog(out / "learned.jsonl")
    result: dict[str, dict[str, Any]] = {}
    notify = progress or (lambda *_: None)
    for i, name in enumerate(names):
        notify("learned predictors", i, len(names))
        params = predictor_params(name, threads, seed, gcn_epochs)
        key = config_hash(
            {
                "predictor": name,
                "params": params,
                "train": [train[0], train[1].round(6).tolist()],
                "val": [val[0], val[1].round(6).tolist()],
                "targets": targets,
            }
        )
        if runs.done(key):
            result[name] = runs.records[key]
            continue
        t0 = time.monotonic()
        model = make_predictor(name, **params)
        model.fit(train[0], train[1], eval_set=val)
        fit_s = time.monotonic() - t0
        pred = {part: model.predict(refs).tolist() for part, refs in targets.items()}
        record = {"key": key, "predictor": name, "seconds": round(fit_s, 1), "pred": pred}
        runs.add(record)
        result[name] = record
        log.info("trained %s on %d networks in %.1f s", name, len(train[0]), fit_s)
    notify("learned predictors", len(names), len(names))
    return result
