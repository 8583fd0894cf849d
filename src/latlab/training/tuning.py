"""Optuna tuning of a predictor's hyperparameters on the validation split.

* **Hyper-parameter spaces** (:func:`param_spaces`): declared on each predictor class as data
  (``param_space = HyperparameterSpace({...})``,
  :mod:`latlab.predictors.hyperparameter_space`): Optuna distributions over constructor
  parameters whose defaults are read from the constructor (so the defaults are a point of the
  space).
* **Objective**: the validation MAPE (%) of a predictor fitted on the training split, with the
  validation split as its early-stopping set. Test rows never enter.
* **Sampler and pruner**: TPE (seeded); Hyperband pruning for epoch-based predictors (FCNN,
  GCN), fed the validation loss after every epoch through :mod:`latlab.predictors.epochs`.
* **Never worse than the defaults**: the untuned predictor is scored first and added to the
  study as a completed trial; the result is whichever of it and the best tuned trial has the
  lower validation error.
* **Storage**: a SQLite file by default (``optuna.db`` in the working directory), any RDB URL
  (``postgresql://...``), or a JournalStorage file (``journal:PATH`` or a ``.log`` path) for
  several worker processes on one study. ``trials`` is the study's *total* budget of tuned
  trials: a re-run resumes an interrupted study, and parallel workers on one study share it.

Parameters given by the user (``--param k=v``) stay fixed and are not searched.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from latlab.errors import DataError, LatlabError, TrackingError, first_line
from latlab.predictors.hyperparameter_space import HyperparameterSpace

if TYPE_CHECKING:
    import optuna

    from latlab.predictors.base import Predictor
    from latlab.training.tracking import Tracker

log = logging.getLogger(__name__)

DEFAULT_STORAGE_FILE = "optuna.db"
#: The objective: validation MAPE (%).
OBJECTIVE = "val_mape"


# --------------------------------------------------------------------------- search spaces


_REGISTERED: dict[str, HyperparameterSpace] = {}


def register_param_space(name: str, space: HyperparameterSpace) -> None:
    """A hyper-parameter space for predictor ``name`` from outside its class (a class attribute
    ``param_space = HyperparameterSpace(...)`` is the usual way)."""
    _REGISTERED[name] = space


def param_spaces() -> dict[str, HyperparameterSpace]:
    """predictor name -> its hyper-parameter space, defaults bound, for every tunable predictor."""
    from latlab.predictors import PREDICTORS

    out: dict[str, HyperparameterSpace] = {}
    for name, cls in sorted(PREDICTORS.items()):
        space = _REGISTERED.get(name) or cls.param_space
        if space is not None:
            out[name] = space.bind(cls)
    return out


def get_param_space(name: str) -> HyperparameterSpace:
    spaces = param_spaces()
    space = spaces.get(name)
    if space is None:
        known = ", ".join(sorted(spaces))
        raise DataError(f"no hyper-parameter space for predictor {name!r} (tunable: {known})")
    return space


# --------------------------------------------------------------------------- storage


def default_storage() -> str:
    """``sqlite:///<cwd>/optuna.db`` (absolute, so every worker in this folder shares it)."""
    return f"sqlite:///{(Path.cwd() / DEFAULT_STORAGE_FILE).resolve()}"


def make_storage(url: str | None) -> Any:
    """An Optuna storage from a URL: an RDB URL, ``journal:PATH`` or a ``.log``/``.journal`` file
    (JournalStorage, for workers sharing a file system without a database server), or a
    plain path (a SQLite file)."""
    import optuna

    text = (url or default_storage()).strip()
    try:
        if text.startswith("journal:") or text.endswith((".log", ".journal")):
            from optuna.storages.journal import JournalFileBackend

            path = Path(text.removeprefix("journal:")).expanduser()
            if not path.parent.is_dir():
                raise TrackingError(f"cannot create journal {path}: no folder {path.parent}")
            return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        if "://" not in text:
            path = Path(text).expanduser().resolve()
            if not path.parent.is_dir():
                raise TrackingError(f"cannot create study storage {path}: no folder")
            text = f"sqlite:///{path}"
        # Several workers on one SQLite file wait for its lock instead of failing at once.
        kwargs = {"connect_args": {"timeout": 60}} if text.startswith("sqlite") else {}
        return _rdb_storage(text, kwargs)
    except LatlabError:
        raise
    except Exception as exc:
        first = first_line(exc)
        raise TrackingError(f"cannot open Optuna storage {text}: {first}") from None


def _rdb_storage(url: str, engine_kwargs: dict[str, Any], attempts: int = 5) -> Any:
    """``RDBStorage``, retried when workers starting together race to create its schema.

    Two processes opening a new database at once both try to create Optuna's tables and
    stamp its schema version; the loser fails with "already exists" or a UNIQUE constraint on
    ``alembic_version`` and, on a second try, finds the schema in place.
    """
    import time

    import optuna

    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
        except Exception as exc:
            text = str(exc)
            racing = "already exists" in text or "alembic_version" in text or "locked" in text
            if not racing or attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- tuning


@dataclass
class TuneResult:
    """What tuning found: the parameters to fit with and how they compare with the defaults."""

    params: dict[str, Any]  # constructor parameters chosen (tuned keys only)
    value: float  # their validation MAPE (%)
    default_value: float  # the untuned predictor's validation MAPE (%)
    used_defaults: bool  # True when no tuned trial beat the defaults
    study_name: str
    storage: str
    n_trials: int  # tuned trials in the study (complete + pruned), every worker
    n_complete: int
    n_pruned: int
    best_trial: int | None
    history: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "params": self.params,
            "val_mape": self.value,
            "default_val_mape": self.default_value,
            "used_defaults": self.used_defaults,
            "study": self.study_name,
            "storage": self.storage,
            "trials": self.n_trials,
            "complete": self.n_complete,
            "pruned": self.n_pruned,
            "best_trial": self.best_trial,
        }


def _display_storage(url: str | None) -> str:
    text = url or default_storage()
    try:
        from sqlalchemy.engine import make_url

        return make_url(text).render_as_string(hide_password=True)
    except Exception:
        return text


def study_signature(
    predictor: str, fixed: Mapping[str, Any], context: Mapping[str, Any]
) -> dict[str, Any]:
    """What must match for trials to be comparable: predictor, fixed params, data, split."""
    from latlab.jsonio import jsonable

    return jsonable({"predictor": predictor, "fixed": dict(fixed), **dict(context)})


def default_study_name(signature: Mapping[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(signature, sort_keys=True).encode()).hexdigest()[:10]
    return f"{signature.get('predictor', 'predictor')}-{signature.get('target', 'target')}-{digest}"


def validation_mape(predictor: Predictor, networks: Sequence[Any], latency_ms: np.ndarray) -> float:
    from latlab.training.metrics import regression_metrics

    return float(regression_metrics(latency_ms, predictor.predict(list(networks)))["mape"])


def tune(
    predictor: str,
    fixed: Mapping[str, Any],
    train: tuple[Sequence[Any], np.ndarray],
    val: tuple[Sequence[Any], np.ndarray],
    n_trials: int,
    *,
    storage: str | None = None,
    study_name: str | None = None,
    context: Mapping[str, Any] | None = None,
    seed: int = 0,
    timeout: float | None = None,
    tracker: Tracker | None = None,
    progress: Callable[[int, int, float | None], None] | None = None,
) -> TuneResult:
    """Tune ``predictor`` (a registry name) on ``train``/``val``; see the module docstring.

    ``fixed`` are constructor parameters that stay as given; ``context`` (dataset hash,
    target, split) is stored on the study and must match when a study is resumed or shared.
    ``progress(done, total, best)`` is called after every trial.
    """
    import optuna

    from latlab.predictors.base import make_predictor
    from latlab.predictors.epochs import epoch_callback

    space = get_param_space(predictor)
    if len(val[0]) == 0:
        raise DataError("tuning needs a validation split: give --val-size of at least 1")
    if int(n_trials) < 0:
        raise DataError(f"the number of tuning trials must be >= 0, got {n_trials}")
    base = make_predictor(predictor, **dict(fixed))  # unknown params fail here, before work
    defaults = base.get_params(deep=False)
    keys = [k for k in space.params if k not in fixed and k in defaults]
    if not keys:
        raise DataError(f"every tuned parameter of {predictor!r} is fixed by --param")
    # The pre-training table enters the signature by content hash (in ``context``): its path
    # may be a temporary filtered copy.
    signature = study_signature(
        predictor, {k: v for k, v in fixed.items() if k != "pretrain"}, context or {}
    )
    name = study_name or default_study_name(signature)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = make_storage(storage)
    sampler_seed = int(seed)
    pruner: optuna.pruners.BasePruner
    if space.epoch_based:
        max_epochs = int(defaults.get(space.epochs_param) or 100)
        pruner = optuna.pruners.HyperbandPruner(
            min_resource=max(1, min(10, max_epochs // 10)), max_resource=max_epochs
        )
    else:
        pruner = optuna.pruners.NopPruner()
    try:
        study = optuna.create_study(
            study_name=name,
            storage=store,
            direction="minimize",
            load_if_exists=True,
            sampler=optuna.samplers.TPESampler(seed=sampler_seed),
            pruner=pruner,
        )
    except Exception as exc:
        first = first_line(exc)
        raise TrackingError(f"cannot create or load study {name!r}: {first}") from None
    _check_study(study, signature, _display_storage(storage))
    # Resumed studies: continue the sampler's stream instead of repeating its first draws.
    if study.trials:
        study.sampler = optuna.samplers.TPESampler(seed=sampler_seed + len(study.trials))

    x_tr, y_tr = list(train[0]), np.asarray(train[1], dtype=float)
    x_va, y_va = list(val[0]), np.asarray(val[1], dtype=float)

    def fit_score(params: Mapping[str, Any], trial: optuna.Trial | None) -> float:
        model = make_predictor(predictor, **{**defaults, **dict(params)})
        callback = None
        if trial is not None and space.epoch_based:

            def callback(epoch: int, loss: float) -> None:
                trial.report(loss, epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at epoch {epoch}")

        with epoch_callback(callback):
            model.fit(x_tr, y_tr, eval_set=(x_va, y_va))
        return validation_mape(model, x_va, y_va)

    # 1. The defaults: scored once per study and added as a completed trial, so that TPE
    #    starts from them and the final choice can be compared with them.
    default_value = _default_value(study)
    if default_value is None:
        default_value = fit_score({}, None)
        trial_values = {k: space.params[k].default for k in keys}
        study.add_trial(
            optuna.trial.create_trial(
                params=trial_values,
                distributions=space.distributions(keys),
                value=default_value,
                user_attrs={"defaults": True},
            )
        )
        _log_trial(tracker, "defaults", {k: defaults[k] for k in keys}, default_value, "COMPLETE")

    # 2. The tuned trials, up to the study's total budget.
    def objective(trial: optuna.Trial) -> float:
        params = {k: space.params[k].to_param(space.params[k].suggest(trial, k)) for k in keys}
        value = fit_score(params, trial)
        if not math.isfinite(value):
            raise optuna.TrialPruned("non-finite validation error")
        return value

    def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        params = {k: space.params[k].to_param(v) for k, v in trial.params.items()}
        _log_trial(tracker, f"trial-{trial.number}", params, trial.value, trial.state.name)
        if progress is not None:
            done = _tuned_count(study)
            best = _best_value(study)
            progress(min(done, int(n_trials)), int(n_trials), best)

    remaining = int(n_trials) - _tuned_count(study)
    if remaining > 0:
        study.optimize(
            objective,
            n_trials=remaining,
            timeout=timeout,
            callbacks=[
                after_trial,
                optuna.study.MaxTrialsCallback(
                    int(n_trials) + _default_count(study),
                    states=(
                        optuna.trial.TrialState.COMPLETE,
                        optuna.trial.TrialState.PRUNED,
                    ),
                ),
            ],
            # A parameter combination a predictor refuses fails its trial, not the study.
            catch=(LatlabError, FloatingPointError),
            gc_after_trial=True,
        )
    return _result(study, space, keys, defaults, default_value, _display_storage(storage))


def _check_study(study: Any, signature: Mapping[str, Any], storage: str) -> None:
    stored = study.user_attrs.get("latlab_signature")
    if stored is None:
        study.set_user_attr("latlab_signature", dict(signature))
        return
    if stored != dict(signature):
        diff = sorted(k for k in set(stored) | set(signature) if stored.get(k) != signature.get(k))
        raise DataError(
            f"study {study.study_name!r} in {storage} was made for other settings "
            f"(different {', '.join(diff)}): use another --study name"
        )


def _is_default_trial(t: Any) -> bool:
    return bool(t.user_attrs.get("defaults"))


def _default_value(study: Any) -> float | None:
    import optuna

    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if _is_default_trial(t):
            return float(t.value)
    return None


def _default_count(study: Any) -> int:
    return sum(_is_default_trial(t) for t in study.get_trials(deepcopy=False))


def _tuned_count(study: Any) -> int:
    import optuna

    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return sum(not _is_default_trial(t) for t in study.get_trials(deepcopy=False, states=done))


def _best_value(study: Any) -> float | None:
    import optuna

    values = [
        t.value
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if t.value is not None
    ]
    return float(min(values)) if values else None


def _log_trial(
    tracker: Tracker | None, name: str, params: Mapping[str, Any], value: float | None, state: str
) -> None:
    if tracker is None or not tracker.enabled:
        return
    try:
        with tracker.nested(name, tags={"latlab.trial_state": state}):
            tracker.log_params(params)
            if value is not None:
                tracker.log_metrics({OBJECTIVE: value})
    except LatlabError:
        raise
    except Exception as exc:  # tracking must not lose a tuning run
        log.warning("could not log %s to MLflow: %s", name, exc)


def _result(
    study: Any,
    space: HyperparameterSpace,
    keys: Sequence[str],
    defaults: Mapping[str, Any],
    default_value: float,
    storage: str,
) -> TuneResult:
    import optuna

    trials = study.get_trials(deepcopy=False)
    tuned = [t for t in trials if not _is_default_trial(t)]
    complete = [
        t for t in tuned if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None
    ]
    pruned = [t for t in tuned if t.state == optuna.trial.TrialState.PRUNED]
    best = min(complete, key=lambda t: t.value) if complete else None
    history = [
        {"number": t.number, "value": t.value, "state": t.state.name, "params": t.params}
        for t in trials
    ]
    if best is None or best.value >= default_value:
        chosen = {k: defaults[k] for k in keys}
        value, used_defaults, number = default_value, True, None
    else:
        chosen = {k: space.params[k].to_param(v) for k, v in best.params.items() if k in keys}
        value, used_defaults, number = float(best.value), False, best.number
    return TuneResult(
        params=chosen,
        value=float(value),
        default_value=float(default_value),
        used_defaults=used_defaults,
        study_name=study.study_name,
        storage=storage,
        n_trials=len(complete) + len(pruned),
        n_complete=len(complete),
        n_pruned=len(pruned),
        best_trial=number,
        history=history,
    )
