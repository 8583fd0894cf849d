"""Optuna tuning on real storages: never worse than the defaults, resumable, shareable."""

from __future__ import annotations

import optuna
import pytest

from latlab.errors import DataError
from latlab.predictors import PREDICTORS, make_predictor
from latlab.training.data import load_training_data
from latlab.training.pipeline import TrainConfig, train
from latlab.training.splits import make_split
from latlab.training.tuning import make_storage, param_spaces, tune, validation_mape

#: Registered predictors that are not tuned (analytical models without free parameters).
UNTUNED = {"lxnorop"}


@pytest.fixture(scope="module")
def nb201_parts(nb201_small):
    td = load_training_data(nb201_small, "gold_6240")
    split = make_split(len(td), train_size=150, val_size=60, seed=0)
    return td.subset(split.train), td.subset(split.val)


def test_every_predictor_has_a_space_whose_defaults_are_the_constructors():
    spaces = param_spaces()  # binding reads every default from the constructor
    missing = sorted(set(PREDICTORS) - set(spaces) - UNTUNED)
    assert not missing, f"predictors without a hyper-parameter space: {missing}"
    for name, space in spaces.items():
        if name not in PREDICTORS:
            continue
        defaults = make_predictor(name).get_params(deep=False)
        for key, param in space.params.items():
            assert key in defaults, f"{name}: {key} is not a constructor parameter"
            assert param.to_param(param.default) == defaults[key], f"{name}.{key}"
            dist = param.distribution()
            assert dist._contains(dist.to_internal_repr(param.default)), f"{name}.{key}"


def test_sqlite_study_is_never_worse_resumes_and_checks_its_settings(tmp_path, nb201_parts):
    train_part, val_part = nb201_parts
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    ctx = {"target": "gold_6240", "dataset_hash": "abc"}
    res = tune("flops", {}, train_part, val_part, 2, storage=storage, study_name="s", context=ctx)
    assert res.value <= res.default_value
    default_model = make_predictor("flops").fit(*train_part, eval_set=val_part)
    assert res.default_value == pytest.approx(validation_mape(default_model, *val_part))
    study = optuna.load_study(study_name="s", storage=storage)
    assert len(study.trials) == 3  # the defaults + 2 tuned trials, stored in the SQLite file
    assert sum(bool(t.user_attrs.get("defaults")) for t in study.trials) == 1
    # The budget is the study's total: the same call again runs nothing; a larger one resumes.
    again = tune("flops", {}, train_part, val_part, 2, storage=storage, study_name="s", context=ctx)
    assert len(optuna.load_study(study_name="s", storage=storage).trials) == 3
    assert again.value == res.value and again.params == res.params
    tune("flops", {}, train_part, val_part, 3, storage=storage, study_name="s", context=ctx)
    assert len(optuna.load_study(study_name="s", storage=storage).trials) == 4
    with pytest.raises(DataError, match="made for other settings"):
        tune(
            "flops",
            {},
            train_part,
            val_part,
            2,
            storage=storage,
            study_name="s",
            context={**ctx, "dataset_hash": "other"},
        )


def test_journal_storage_and_errors(tmp_path, nb201_parts):
    train_part, val_part = nb201_parts
    journal = tmp_path / "study.log"
    res = tune("flops", {}, train_part, val_part, 1, storage=str(journal), study_name="j")
    assert journal.stat().st_size > 0 and res.n_trials == 1
    assert isinstance(make_storage(f"journal:{journal}"), optuna.storages.JournalStorage)
    with pytest.raises(DataError, match="no hyper-parameter space for predictor 'lxnorop'"):
        tune("lxnorop", {}, train_part, val_part, 1, storage=str(journal))
    with pytest.raises(DataError, match="validation split"):
        tune("flops", {}, train_part, ([], []), 1, storage=str(journal))
    with pytest.raises(DataError, match="every tuned parameter"):
        tune("flops", {"use_bytes": True}, train_part, val_part, 1, storage=str(journal))


def test_gbm_tuning_through_the_pipeline_beats_or_keeps_defaults(tmp_path, nb201_small):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    fixed = {"n_estimators": 300, "n_jobs": 1}
    base = TrainConfig(
        predictor="gbm", params=fixed, train_size=150, val_size=60, conformal=None, seed=0
    )
    untuned = train(nb201_small, "gold_6240", base, tmp_path / "untuned")
    tuned_cfg = TrainConfig(**{**base.__dict__, "tune": 6, "storage": storage})
    tuned = train(nb201_small, "gold_6240", tuned_cfg, tmp_path / "tuned")
    t = tuned.tuning
    assert t.default_value == pytest.approx(untuned.metrics["val"]["mape"])
    assert tuned.metrics["val"]["mape"] <= untuned.metrics["val"]["mape"] + 1e-9
    assert tuned.metrics["val"]["mape"] == pytest.approx(t.value)  # the refit is the trial
    assert t.n_trials == 6 and t.study_name.startswith("gbm-gold_6240-")
    manifest = tuned.manifest
    assert manifest["tuning"]["trials"] == 6
    assert manifest["predictor"]["tuned_params"] == t.params
    for key, value in t.params.items():
        assert manifest["predictor"]["params"][key] == value


def test_epoch_based_trials_report_every_epoch_for_hyperband(tmp_path, nb201_parts):
    from latlab.predictors.epochs import epoch_callback

    train_part, val_part = nb201_parts
    seen: list[tuple[int, float]] = []
    model = make_predictor("fcnn", max_epochs=6, patience=100, n_jobs=1)
    with epoch_callback(lambda e, loss: seen.append((e, loss))):
        model.fit(*train_part, eval_set=val_part)
    assert [e for e, _ in seen] == list(range(6))
    assert min(loss for _, loss in seen) == pytest.approx(model.train_log_["best_val_loss"])

    class Stop(Exception):
        pass

    def stop(epoch, loss):
        if epoch == 2:
            raise Stop

    with pytest.raises(Stop), epoch_callback(stop):
        make_predictor("fcnn", max_epochs=6, n_jobs=1).fit(*train_part, eval_set=val_part)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    fixed = {"max_epochs": 12, "patience": 100, "n_jobs": 1}
    res = tune("fcnn", fixed, train_part, val_part, 4, storage=storage, study_name="f")
    study = optuna.load_study(study_name="f", storage=storage)
    tuned = [t for t in study.trials if not t.user_attrs.get("defaults")]
    assert len(tuned) == 4 and all(t.intermediate_values for t in tuned)
    assert res.value <= res.default_value


def test_parallel_workers_share_one_sqlite_study(tmp_path, fcnn_measured):
    """Two `latlab train --tune` processes on one study: together they spend its budget."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "src"
    env = {**os.environ, "PYTHONPATH": str(src)}
    storage = f"sqlite:///{tmp_path / 'shared.db'}"

    def command(worker: int) -> list[str]:
        return [
            sys.executable, "-m", "latlab", "train", "--data", str(fcnn_measured["csv"]),
            "--target", "cpu", "--predictor", "flops", "--conformal", "none", "--tune", "3",
            "--storage", storage, "--study", "shared", "--tune-seed", str(worker),
            "--out", str(tmp_path / f"bundle-{worker}"), "--no-mlflow", "--json",
        ]  # fmt: skip

    procs = [
        subprocess.Popen(
            command(w), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for w in (1, 2)
    ]
    outputs = [p.communicate(timeout=240) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    study = optuna.load_study(study_name="shared", storage=storage)
    tuned = [t for t in study.trials if not t.user_attrs.get("defaults")]
    # The budget is shared: 3 tuned trials, or one more when both workers start the last one
    # at the same moment (Optuna checks the count before a trial starts).
    assert 3 <= len(tuned) <= 4
    import json

    docs = [json.loads(out) for out, _ in outputs]
    assert {d["tuning"]["study"] for d in docs} == {"shared"}


@pytest.mark.postgres
def test_postgresql_study(postgres_url, nb201_parts):
    train_part, val_part = nb201_parts
    res = tune("flops", {}, train_part, val_part, 2, storage=postgres_url, study_name="pg")
    assert res.n_trials == 2 and res.value <= res.default_value
    assert len(optuna.load_study(study_name="pg", storage=postgres_url).trials) == 3
