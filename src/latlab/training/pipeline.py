"""Train, evaluate and predict: the three steps behind ``latlab train/evaluate/predict``.

:func:`train` loads one device column (validated, invalid latencies dropped and reported),
splits it (:mod:`latlab.training.splits`), optionally tunes the predictor on the validation
split (:mod:`latlab.training.tuning`), fits it with the validation split for early stopping,
calibrates conformal intervals on the calibration split, scores validation and test rows,
writes a bundle (:mod:`latlab.training.bundle`) and logs everything to MLflow
(:mod:`latlab.training.tracking`). Every check of the user's input happens before any work,
and the bundle is written atomically at the end: a failed or interrupted run leaves nothing
half-written (finished Optuna trials stay in their study, and a re-run resumes it).

:func:`evaluate` scores a bundle on every valid row of a table; :func:`predict` answers
references with latencies and, for calibrated bundles, intervals.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from latlab.confidence import check_confidence, recommended_calibration_size
from latlab.errors import DataError, LatlabError, first_line
from latlab.training import intervals
from latlab.training.bundle import (
    Bundle,
    check_bundle_out,
    environment,
    load_bundle,
    save_bundle,
)
from latlab.training.data import Source, TrainingData, dataset_hash, load_source, training_data
from latlab.training.metrics import interval_metrics, metrics_by_group, regression_metrics
from latlab.training.splits import (
    FEW_SHOT_ROWS,
    Split,
    default_cal_size,
    device_split,
    families_of,
    make_split,
    min_rows_for_calibration,
)
from latlab.training.tracking import Tracker

if TYPE_CHECKING:
    from latlab.predictors.base import IntervalPredictor, LatencyPredictor

log = logging.getLogger(__name__)

#: ``progress(stage, done, total)``: stage names are ``load``, ``tune``, ``fit``,
#: ``calibrate``, ``evaluate``, ``save``, ``log``; ``done``/``total`` count tuning trials.
Progress = Callable[[str, int | None, int | None], None]


@dataclass
class TrainConfig:
    """Everything ``latlab train`` decides besides the data, the column and the output."""

    predictor: str
    params: dict[str, Any] = field(default_factory=dict)
    split: str = "random"
    train_size: int | None = None
    val_size: int | None = None
    cal_size: int | None = None
    test_size: int | float | None = None
    test_families: tuple[str, ...] | None = None
    seed: int = 0
    tune: int = 0
    storage: str | None = None
    study: str | None = None
    tune_timeout: float | None = None
    tune_seed: int | None = None
    conformal: str | None = intervals.DEFAULT_METHOD
    confidence: float = 0.9
    conformal_options: dict[str, Any] = field(default_factory=dict)
    pretrain: str | None = None
    #: Floor (ms) below which the table's latencies are dropped (``--min-ms``; none default).
    min_ms: float | None = None


@dataclass
class TrainResult:
    """A finished training: where the bundle is and what it scored."""

    out: Path
    manifest: dict[str, Any]
    split: Split
    metrics: dict[str, dict[str, float]]
    by_family: dict[str, dict[str, float]]
    tuning: Any
    warnings: list[str]
    run_id: str | None
    model_uri: str | None


@dataclass
class Evaluation:
    """Metrics of a bundle on a table's valid rows (and per network family)."""

    metrics: dict[str, float]
    by_family: dict[str, dict[str, float]]
    warnings: list[str]
    n_seen: int
    target: str
    dataset_hash: str
    run_id: str | None = None
    predictions: np.ndarray | None = None


def _noop(stage: str, done: int | None = None, total: int | None = None) -> None:
    return None


# --------------------------------------------------------------------------- checks


def build_predictor(name: str, params: Mapping[str, Any], seed: int) -> LatencyPredictor:
    """A predictor by name; ``random_state`` follows ``seed`` unless given; one-line errors."""
    from latlab.predictors import PREDICTORS, make_predictor

    cls = PREDICTORS.get(name)
    if cls is None:
        return make_predictor(name)  # raises the DataError listing the known names
    known = cls._get_param_names()
    unknown = [k for k in params if k not in known]
    renamed = [k for k in unknown if k in cls.renamed_params]
    if renamed:
        new = cls.renamed_params[renamed[0]]
        raise DataError(
            f"parameter {renamed[0]!r} of predictor {name!r} is now called {new!r} "
            f"(--param {new}={params[renamed[0]]!r})"
        )
    if unknown:
        raise DataError(
            f"unknown parameter {unknown[0]!r} for predictor {name!r} "
            f"(parameters: {', '.join(known) or 'none'})"
        )
    defaults = cls().get_params(deep=False)
    for key, value in params.items():
        default = defaults.get(key)
        # A count (trees, epochs, layers, ...) defaults to a positive int: a negative one is a
        # typo the model library would only reject deep inside fit, with its own traceback.
        if (
            key not in _SIGNED_PARAMS
            and isinstance(default, int)
            and not isinstance(default, bool)
            and default > 0
            and isinstance(value, int | float)
            and not isinstance(value, bool)
            and value < 0
        ):
            raise DataError(
                f"--param {key}={value!r}: predictor {name!r} needs a non-negative {key} "
                f"(default {default})"
            )
    full = dict(params)
    if "random_state" in known and "random_state" not in full:
        full["random_state"] = int(seed)
    return make_predictor(name, **full)


#: Integer parameters where a negative value has a meaning (all cores, no limit, a seed).
_SIGNED_PARAMS = frozenset({"n_jobs", "seed", "random_state", "verbose", "max_depth"})


def fit_predictor(
    model: LatencyPredictor, x: Any, y: Any, params: Mapping[str, Any], **kwargs: Any
) -> LatencyPredictor:
    """``model.fit`` with the model library's own refusal of a parameter value (LightGBM's,
    scikit-learn's, torch's ``ValueError``) turned into one line naming ``--param``."""
    try:
        return model.fit(x, y, **kwargs)
    except LatlabError:
        raise
    except Exception as exc:
        library = type(exc).__module__.split(".")[0]
        if not params or not (isinstance(exc, ValueError | TypeError) or library == "lightgbm"):
            raise
        given = ", ".join(f"{k}={v!r}" for k, v in params.items())
        first = first_line(exc)
        raise DataError(f"predictor {model.name!r} refused --param {given}: {first}") from None


def _check_config(config: TrainConfig) -> LatencyPredictor:
    """Every check that needs no data: fails fast with one line."""
    check_confidence(config.confidence)
    intervals.check_method(config.conformal)
    predictor = build_predictor(config.predictor, config.params, config.seed)
    if config.pretrain is not None and "pretrain" not in predictor.get_params(deep=False):
        raise DataError(
            f"--pretrain applies to predictors that transfer from other devices "
            f"(transfer), not to {config.predictor!r}"
        )
    if config.tune or config.study:
        from latlab.training.tuning import get_param_space

        get_param_space(config.predictor)
        if config.tune < 0:
            raise DataError(f"--tune must be >= 0 trials, got {config.tune}")
        if config.val_size == 0:
            raise DataError("tuning needs a validation split: --val-size must be >= 1")
    if config.cal_size and intervals.check_method(config.conformal) is None:
        raise DataError("--cal-size needs conformal intervals (--conformal METHOD)")
    return predictor


def train_only_references(predictor: str) -> set[str]:
    """References a predictor must see in training, never in validation or test.

    A predictor class may list them in ``train_only_references``; the layer-wise (ANNETTE)
    predictors read the session overhead from the benchmark table's session probe, which is a
    constant of the device rather than a sample to hold out.
    """
    from latlab.predictors import PREDICTORS

    cls = PREDICTORS.get(predictor)
    return set(cls.train_only_references) if cls is not None else set()


def store_params(params: Mapping[str, Any], data: Any, td: TrainingData) -> dict[str, Any]:
    """``store``/``device`` for predictors that read their own data from the store.

    The kernel predictor trains on the profiled kernels a bench store holds next to the
    network latencies: trained from a store (``--data STORE``), it is pointed at that store
    and the target device unless the user gave them.
    """
    if "store" not in params or "device" not in params or td.kind != "store":
        return {}
    out: dict[str, Any] = {}
    if not params.get("store") and isinstance(data, str | Path):
        out["store"] = str(data)
    if not params.get("device"):
        out["device"] = td.target
    return out


def precision_params(
    params: Mapping[str, Any], td: TrainingData, given: Mapping[str, Any]
) -> dict[str, Any]:
    """``precision`` for predictors that take one, from the data: the target column's
    precision suffix (``epyc-2c-ort-int8`` -> int8, the name ``latlab measure/bench
    --precision`` gives; :func:`latlab.datasets.measure.split_precision`).

    The one place the default is taken from the data, so that a layer-wise predictor trained
    on an ``-int8`` column takes its networks at int8 (it took them at fp32 unless ``--param
    precision=int8`` was given) and the kernel predictor checks the column's precision against
    its store's kernels. ``--param precision=...`` (``given``) wins; an fp32 column adds
    nothing (the layer-wise default, and the kernel predictor reads its store's)."""
    from latlab.datasets.measure import split_precision

    if "precision" not in params or "precision" in given:
        return {}
    _, precision = split_precision(td.target)
    return {} if precision == "fp32" else {"precision": precision}


def _split(data: TrainingData, config: TrainConfig, conformal: str | None) -> Split:
    n = len(data)
    if conformal is None or conformal in intervals.CROSS_METHODS:
        cal = 0
    elif config.cal_size is not None:
        cal = int(config.cal_size)
    else:
        cal = default_cal_size(n, config.confidence)
    families = families_of(data.networks) if config.split == "family" else None
    wanted = train_only_references(config.predictor)
    from latlab.predictors.base import PREDICTORS

    # a predictor may also pin whole kinds of rows (the kernel predictor: its single-layer
    # benchmarks, which are kernel data rather than networks to validate or calibrate on)
    cls = PREDICTORS.get(config.predictor)
    rule = getattr(cls, "train_only", None)
    pinned = [i for i, n in enumerate(data.networks) if n in wanted or (rule and rule(n))]
    return make_split(
        n,
        kind=config.split,
        train_size=config.train_size,
        val_size=config.val_size,
        cal_size=cal,
        test_size=config.test_size,
        seed=config.seed,
        families=families,
        test_families=config.test_families,
        pinned=pinned,
        pinned_note=str(getattr(cls, "train_only_note", "")),
        what=f"column {data.target!r} of {data.source}",
    )


# --------------------------------------------------------------------------- train


def _device_doc(td: TrainingData) -> dict[str, Any]:
    """The device column and, for data from a store, its backend and machine fingerprint."""
    doc: dict[str, Any] = {"column": td.target, **(td.device_info or {})}
    fp = doc.get("fingerprint")
    if isinstance(fp, dict) and fp:
        from latlab.datasets.measure.fingerprint import fingerprint_digest

        doc["fingerprint_digest"] = fingerprint_digest(fp)
    elif fp:
        doc["fingerprint_digest"] = str(fp)
    return doc


def _prepare_pretrain(
    pretrain: str, target: str, params: dict[str, Any], tmp: Path
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split by device: pre-train on the source devices of ``pretrain``, never on ``target``.

    Returns the parameter updates for the predictor and a description for the manifest. A
    predictor with a ``target_exclude`` parameter is told to drop the target column itself;
    for others, a table of the source columns only is written to ``tmp`` (a store URL is
    always exported to such a table, since predictors read table files).
    """
    from latlab.datasets.tables import NETWORK, save_table

    source = load_source(pretrain)
    sources = device_split(source.devices, target)
    has_target = target in source.devices
    info: dict[str, Any] = {
        "source": source.source,
        "devices": sources,
        "excluded": [target] if has_target else [],
        "rows": len(source.table),
    }
    frame = source.table.data[[NETWORK, *sources]]
    info["hash"] = _frame_hash(frame)
    updates: dict[str, Any] = {}
    if source.kind == "table" and (not has_target or "target_exclude" in params):
        updates["pretrain"] = str(pretrain)
        if has_target and not params.get("target_exclude"):
            updates["target_exclude"] = target
        return updates, info
    path = tmp / "pretrain.parquet"
    save_table(frame, path)
    updates["pretrain"] = str(path)
    return updates, info


def _frame_hash(frame: Any) -> str:
    import hashlib

    import pandas as pd

    return hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).to_numpy()).hexdigest()


def _evaluate_part(
    point: Any,
    networks: list[str],
    y: np.ndarray,
    confidence: float,
    *,
    wrapper: Any = None,
    families: Sequence[str] | None = None,
) -> tuple[dict[str, float], dict[str, dict[str, float]], np.ndarray]:
    """Point metrics of ``point`` (or of ``wrapper``), interval metrics from ``wrapper``."""
    model = wrapper if wrapper is not None else point
    pred = np.asarray(model.predict(networks), dtype=float)
    metrics = regression_metrics(y, pred)
    low = high = None
    if wrapper is not None:
        low, high = intervals.predict_interval(wrapper, networks, confidence, pred)
        metrics.update(interval_metrics(y, low, high, confidence))
    by_family: dict[str, dict[str, float]] = {}
    if families is not None:
        by_family = metrics_by_group(
            families, y, pred, low, high, confidence if wrapper is not None else None
        )
    return metrics, by_family, pred


def train(
    data: str | Path | Source | TrainingData,
    target: str,
    config: TrainConfig,
    out: str | Path,
    *,
    tracker: Tracker | None = None,
    progress: Progress | None = None,
) -> TrainResult:
    """Fit, calibrate, score and save one device's predictor (see the module docstring)."""
    progress = progress or _noop
    tracker = tracker or Tracker(enabled=False)
    predictor = _check_config(config)
    conformal = intervals.check_method(config.conformal)
    confidence = check_confidence(config.confidence)
    out = check_bundle_out(out)  # before any work (the CLI says --out)

    progress("load", None, None)
    td = _training_data(data, target, config)
    small_data, fallback = _too_few_to_calibrate(td, conformal, confidence, config)
    if small_data:
        conformal = fallback
        log.warning("%s", small_data)
    if len(td) < FEW_SHOT_ROWS and config.val_size is None and not (config.tune or config.study):
        config = replace(config, val_size=0)  # 1-2 validation rows would score nothing
    split = _split(td, config, conformal)
    if len(split.train) < predictor.min_train_rows:
        raise DataError(
            f"predictor {config.predictor!r} needs at least {predictor.min_train_rows} training "
            f"rows, the split gives {len(split.train)}"
        )
    warnings: list[str] = [small_data] if small_data else []
    cross = conformal in intervals.CROSS_METHODS
    if conformal and not cross and len(split.cal) < recommended_calibration_size(confidence):
        warnings.append(
            f"calibration set of {len(split.cal)} networks is small for {confidence:g} "
            f"confidence (at least {recommended_calibration_size(confidence)} recommended): "
            "intervals may be infinite or unstable"
        )
        log.warning("%s", warnings[-1])  # now, not after a long tuning run
    train_rows = td.subset(split.train)
    val_rows = td.subset(split.val)
    cal_rows = td.subset(split.cal)
    test_rows = td.subset(split.test)
    context: dict[str, Any] = {
        "target": target,
        "dataset_hash": td.dataset_hash,
        "split": split.describe(),
    }
    device = _device_doc(td)
    with (
        tracker.run(
            f"train-{config.predictor}-{target}", tags=_run_tags(config, target, td, device)
        ),
        tempfile.TemporaryDirectory(prefix="latlab-train-") as tmp_name,
    ):
        parts = (train_rows, val_rows, cal_rows)
        env = _log_inputs(
            tracker, config, predictor, td, target, split, conformal, confidence, device, parts
        )
        params, pretrain_info = _model_params(
            config, predictor, data, td, target, Path(tmp_name), tracker, context
        )
        tuning = None
        if config.tune or config.study:
            tuning = _tune(config, params, train_rows, val_rows, context, tracker, progress)
            params.update(tuning.params)

        progress("fit", None, None)
        from latlab.predictors.base import make_predictor

        model = make_predictor(config.predictor, **params)
        x_va, y_va = val_rows
        fit_predictor(model, *train_rows, config.params, eval_set=val_rows if x_va else None)
        if pretrain_info is not None and params["pretrain"] != str(config.pretrain):
            # The saved parameter names the user's data, not the temporary filtered copy.
            model.set_params(pretrain=str(config.pretrain))

        wrapper = None
        if conformal:
            progress("calibrate", None, None)
            wrapper = _calibrated(conformal, model, config, train_rows, cal_rows, warnings)

        progress("evaluate", None, None)
        metrics, by_family, preds = _score(model, val_rows, test_rows, confidence, wrapper)

        progress("save", None, None)
        manifest = {
            "target": target,
            "device": device,
            "dataset": {
                "source": td.source,
                "kind": td.kind,
                "hash": td.dataset_hash,
                "rows": len(td),
                "dropped": td.dropped,
            },
            "split": split.describe(),
            "predictor": {"tuned_params": tuning.params if tuning else None},
            "conformal": (
                {
                    "method": conformal,
                    "confidence": confidence,
                    "calibration_size": len(split.cal),
                    "options": config.conformal_options,
                    "warnings": list(warnings),
                }
                if conformal
                else None
            ),
            "metrics": {**metrics, **({"test_by_family": by_family} if by_family else {})},
            "tuning": tuning.as_dict() if tuning else None,
            "pretrain": pretrain_info,
            "environment": env,
            "mlflow": (
                {"run_id": tracker.run_id, "tracking_uri": tracker.uri, "model": "model"}
                if tracker.enabled
                else None
            ),
        }
        save_bundle(
            out,
            model,
            conformal=wrapper,
            manifest=manifest,
            split=split.references(td.networks),
        )
        bundle_manifest = load_bundle(out, verify=False).manifest

        progress("log", None, None)
        _log_results(tracker, metrics, by_family, preds, {"val": y_va, "test": test_rows[1]})
        if warnings:
            tracker.set_tags({"latlab.warnings": " | ".join(warnings)})
        model_uri = tracker.log_bundle(out) if tracker.enabled else None
    # The wrappers log their own warnings (small calibration set, networks outside the
    # distribution) as they arise: they are recorded here, not repeated.
    return TrainResult(
        out=out,
        manifest=bundle_manifest,
        split=split,
        metrics=metrics,
        by_family=by_family,
        tuning=tuning,
        warnings=warnings,
        run_id=tracker.run_id,
        model_uri=model_uri,
    )


#: References and latencies (ms) of one part of the split.
Rows = tuple[list[str], np.ndarray]


def _training_data(
    data: str | Path | Source | TrainingData, target: str, config: TrainConfig
) -> TrainingData:
    """The rows ``train`` fits on: given, or loaded from a table or source."""
    if isinstance(data, TrainingData):
        return data
    source = data if isinstance(data, Source) else load_source(data, config.min_ms)
    return training_data(source, target)


def _too_few_to_calibrate(
    td: TrainingData, conformal: str | None, confidence: float, config: TrainConfig
) -> tuple[str | None, str | None]:
    """Why no calibration split is carved, and the method used instead (``None``: no
    intervals), or ``(None, None)``: a split method without ``--cal-size`` on fewer rows than a
    calibration split needs. Too few rows for a split: CV+ (jackknife+ with one network per fold
    up to 10 folds) calibrates on the training networks themselves, bounded from 9 networks at
    90 %."""
    if not (
        conformal
        and conformal not in intervals.CROSS_METHODS
        and config.cal_size is None
        and len(td) < min_rows_for_calibration(confidence)
    ):
        return None, None
    fallback = intervals.small_data_method(len(td), confidence)
    reason = (
        f"{len(td)} networks are too few for a calibration split (the default carves one "
        f"from {min_rows_for_calibration(confidence)} networks up): trained on all of them, "
        + (
            f"intervals by {fallback} (out-of-fold over the training networks: "
            f"{min(len(td), 10)} refits)"
            if fallback
            else "without conformal intervals (cv+ needs "
            f"{intervals.cross_min_size(confidence)} networks at {confidence:g})"
        )
        + "; --cal-size N carves a split anyway, --conformal none skips intervals"
    )
    return reason, fallback


def _run_tags(
    config: TrainConfig, target: str, td: TrainingData, device: dict[str, Any]
) -> dict[str, str]:
    """The tracking run's tags: command, predictor, device, data and machine fingerprint."""
    tags = {
        "latlab.command": "train",
        "latlab.predictor": config.predictor,
        "latlab.device": target,
        "latlab.dataset_hash": td.dataset_hash,
    }
    if device.get("fingerprint_digest"):
        tags["latlab.device_fingerprint"] = device["fingerprint_digest"]
    return tags


def _log_inputs(
    tracker: Tracker,
    config: TrainConfig,
    predictor: LatencyPredictor,
    td: TrainingData,
    target: str,
    split: Split,
    conformal: str | None,
    confidence: float,
    device: dict[str, Any],
    parts: tuple[Rows, Rows, Rows],
) -> dict[str, Any]:
    """Log what the run trains on (parameters, the training dataset, the device); returns
    the environment recorded in the manifest."""
    (x_tr, y_tr), (x_va, y_va), (x_ca, y_ca) = parts
    tracker.log_params(
        {
            "predictor": config.predictor,
            "target": target,
            "data": td.source,
            "dataset_hash": td.dataset_hash,
            "dataset_rows": len(td),
            "split": split.describe(),
            "conformal": conformal or "none",
            "confidence": confidence,
        }
    )
    tracker.log_params(predictor.get_params(deep=False), prefix="param")
    tracker.log_dataset(
        x_tr + x_va + x_ca,
        np.concatenate([y_tr, y_va, y_ca]),
        name=f"{Path(td.source).name}:{target}",
        source=td.source,
        digest=dataset_hash(x_tr + x_va + x_ca, np.concatenate([y_tr, y_va, y_ca])),
        context="training",
    )
    if len(device) > 1:
        tracker.log_dict(device, "device.json")
    env = environment()
    tracker.set_tags({"latlab.machine": env.get("machine", {}).get("digest", "")})
    return env


def _model_params(
    config: TrainConfig,
    predictor: LatencyPredictor,
    data: str | Path | Source | TrainingData,
    td: TrainingData,
    target: str,
    tmp: Path,
    tracker: Tracker,
    context: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The predictor's constructor parameters (with the store's and the pretraining table's
    additions) and the pretraining table's description (``None`` without one)."""
    pretrain_info = None
    params = predictor.get_params(deep=False)
    params.update(store_params(params, data, td))
    params.update(precision_params(params, td, config.params))
    if config.pretrain is not None:
        updates, pretrain_info = _prepare_pretrain(config.pretrain, target, params, tmp)
        if "min_ms" in params and params["min_ms"] is None and config.min_ms is not None:
            updates["min_ms"] = config.min_ms  # the same floor for the source devices
        params.update(updates)
        context["pretrain"] = pretrain_info["hash"]
        tracker.log_params({"pretrain": pretrain_info})
    return params, pretrain_info


def _tune(
    config: TrainConfig,
    params: dict[str, Any],
    train_rows: Rows,
    val_rows: Rows,
    context: dict[str, Any],
    tracker: Tracker,
    progress: Progress,
) -> Any:
    """Tune the parameters not fixed by ``--param`` (or the pretraining table) on the
    validation rows; logs the tuned parameters and both validation scores."""
    from latlab.training.tuning import tune

    fixed = {
        k: v for k, v in params.items() if k in config.params or k in ("pretrain", "target_exclude")
    }
    if params.get("precision") not in (None, "fp32"):  # the data's (precision_params): trials
        fixed["precision"] = params["precision"]  # run at it, it is never a tuned choice
    if "random_state" in params:
        fixed["random_state"] = params["random_state"]
    progress("tune", 0, config.tune)
    tuning = tune(
        config.predictor,
        fixed,
        train_rows,
        val_rows,
        config.tune,
        storage=config.storage,
        study_name=config.study,
        context=context,
        seed=config.seed if config.tune_seed is None else config.tune_seed,
        timeout=config.tune_timeout,
        tracker=tracker,
        progress=lambda d, t, b: progress("tune", d, t),
    )
    tracker.log_params(tuning.params, prefix="tuned")
    tracker.log_metrics({"tune_val_mape": tuning.value, "default_val_mape": tuning.default_value})
    return tuning


def _calibrated(
    conformal: str,
    model: LatencyPredictor,
    config: TrainConfig,
    train_rows: Rows,
    cal_rows: Rows,
    warnings: list[str],
) -> IntervalPredictor:
    """The conformal wrapper of ``model``, calibrated (cross methods: out-of-fold on the
    training rows); its warnings are added to ``warnings``."""
    wrapper = intervals.wrap(conformal, model, **config.conformal_options)
    if conformal in intervals.CROSS_METHODS:  # out-of-fold scores of the training rows
        intervals.calibrate(wrapper, *train_rows)
    else:
        intervals.calibrate(wrapper, *cal_rows, train=train_rows)
    warnings += [w for w in intervals.warnings_of(wrapper) if w not in warnings]
    return wrapper


def _score(
    model: LatencyPredictor,
    val_rows: Rows,
    test_rows: Rows,
    confidence: float,
    wrapper: IntervalPredictor | None,
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]], dict[str, np.ndarray]]:
    """Metrics of the validation and test rows (the test rows by family too, with
    intervals), and the predictions for the plots."""
    metrics: dict[str, dict[str, float]] = {}
    by_family: dict[str, dict[str, float]] = {}
    preds: dict[str, np.ndarray] = {}
    (x_va, y_va), (x_te, y_te) = val_rows, test_rows
    if x_va:
        metrics["val"], _, preds["val"] = _evaluate_part(model, x_va, y_va, confidence)
    if x_te:
        metrics["test"], by_family, preds["test"] = _evaluate_part(
            model, x_te, y_te, confidence, wrapper=wrapper, families=families_of(x_te)
        )
    return metrics, by_family, preds


def _log_results(
    tracker: Tracker,
    metrics: dict[str, dict[str, float]],
    by_family: dict[str, dict[str, float]],
    preds: dict[str, np.ndarray],
    truth: dict[str, np.ndarray],
) -> None:
    """Log the scores (overall, per test family) and the predicted-vs-measured plots."""
    for part, values in metrics.items():
        tracker.log_metrics(values, prefix=part)
    for fam, values in by_family.items():
        tracker.log_metrics(values, prefix=f"test_family.{fam}")
    for part, pred in preds.items():
        tracker.log_prediction_plots(truth[part], pred, part)


# --------------------------------------------------------------------------- evaluate


def evaluate(
    bundle: str | Path | Bundle,
    data: str | Path | Source | TrainingData,
    target: str,
    confidence: float | None = None,
    *,
    tracker: Tracker | None = None,
    min_ms: float | None = None,
) -> Evaluation:
    """Metrics of ``bundle`` on every valid row of column ``target`` of ``data``.

    Intervals (``coverage``, ``mean_relative_width``) at ``confidence`` (default: the bundle's)
    when the bundle is calibrated. Networks the bundle was fitted, validated or calibrated on
    are counted and warned about (their errors are optimistic).
    """
    tracker = tracker or Tracker(enabled=False)
    if confidence is not None:
        check_confidence(confidence)
    b = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    if isinstance(data, TrainingData):
        td = data
    else:
        source = data if isinstance(data, Source) else load_source(data, min_ms)
        td = training_data(source, target)
    conf = b.confidence if confidence is None else float(confidence)
    warnings: list[str] = []
    if b.target and b.target != target:
        warnings.append(f"bundle was trained for {b.target!r}, evaluated on {target!r}")
    seen = b.trained_on()
    n_seen = sum(n in seen for n in td.networks)
    if n_seen:
        warnings.append(
            f"{n_seen} of the {len(td)} networks were used to fit, validate or calibrate "
            "this bundle: these metrics are optimistic"
        )
    tags = {
        "latlab.command": "evaluate",
        "latlab.predictor": b.predictor_name,
        "latlab.device": target,
        "latlab.dataset_hash": td.dataset_hash,
    }
    with tracker.run(f"evaluate-{b.predictor_name}-{target}", tags=tags):
        pred = b.predict(td.networks)
        metrics = regression_metrics(td.latency_ms, pred)
        low = high = None
        if b.calibrated:
            low, high = b.predict_interval(td.networks, conf, point_ms=pred)
            metrics.update(interval_metrics(td.latency_ms, low, high, conf))
        by_family = metrics_by_group(
            families_of(td.networks), td.latency_ms, pred, low, high, conf if b.calibrated else None
        )
        own = list(warnings)
        warnings += [w for w in b.warnings if w not in warnings]
        tracker.log_params(
            {
                "bundle": str(b.path.resolve()),
                "predictor": b.predictor_name,
                "target": target,
                "data": td.source,
                "dataset_hash": td.dataset_hash,
                "dataset_rows": len(td),
                "confidence": conf,
                "bundle_run_id": (b.manifest.get("mlflow") or {}).get("run_id"),
            }
        )
        tracker.log_dataset(
            td.networks,
            td.latency_ms,
            name=f"{Path(td.source).name}:{target}",
            source=td.source,
            digest=td.dataset_hash,
            context="evaluation",
        )
        tracker.log_metrics(metrics)
        for fam, values in by_family.items():
            tracker.log_metrics(values, prefix=f"family.{fam}")
        tracker.log_prediction_plots(td.latency_ms, pred, "eval")
    for w in own:  # the bundle's wrapper logs its own
        log.warning("%s", w)
    return Evaluation(
        metrics=metrics,
        by_family=by_family,
        warnings=warnings,
        n_seen=n_seen,
        target=target,
        dataset_hash=td.dataset_hash,
        run_id=tracker.run_id,
        predictions=pred,
    )


# --------------------------------------------------------------------------- predict


def predict(
    bundle: str | Path | Bundle,
    networks: Sequence[Any],
    confidence: float | None = None,
    *,
    tracker: Tracker | None = None,
) -> Any:
    """A DataFrame of latencies (and intervals when the bundle is calibrated), one row per
    network; see :meth:`Bundle.predict_frame`."""
    tracker = tracker or Tracker(enabled=False)
    if confidence is not None:
        check_confidence(confidence)
    if not networks:
        raise DataError("give at least one network reference to predict")
    b = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    tags = {"latlab.command": "predict", "latlab.predictor": b.predictor_name}
    with tracker.run(f"predict-{b.predictor_name}-{b.target}", tags=tags):
        frame = b.predict_frame(list(networks), confidence)
        tracker.log_params(
            {
                "bundle": str(b.path.resolve()),
                "predictor": b.predictor_name,
                "target": b.target,
                "networks": len(frame),
                "confidence": confidence if confidence is not None else b.confidence,
            }
        )
        tracker.log_table(frame, "predictions.json")
    return frame
