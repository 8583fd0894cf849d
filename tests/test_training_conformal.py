"""Conformal intervals through the pipeline, the bundle, the CLI and the pyfunc model."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cli_helpers import run_cli
from latlab.training.bundle import load_bundle
from latlab.training.pipeline import TrainConfig, evaluate, train
from latlab.training.tracking import Tracker


@pytest.fixture(scope="module")
def calibrated(nb201_small, tmp_path_factory):
    """flops with split conformal (train 200, val 50, cal 150, test 200), logged to MLflow."""
    out = tmp_path_factory.mktemp("conformal") / "bundle"
    config = TrainConfig(
        predictor="flops", train_size=200, val_size=50, cal_size=150, conformal="split"
    )
    result = train(nb201_small, "titanx_32", config, out)
    return result, out


def test_default_split_conformal_covers_held_out_networks(calibrated):
    result, _ = calibrated
    test = result.metrics["test"]
    assert result.split.sizes() == {"train": 200, "val": 50, "cal": 150, "test": 200}
    # 90 % intervals on 200 exchangeable held-out networks: coverage within a few points.
    assert 80 <= test["coverage"] <= 98 and test["confidence"] == 0.9
    assert test["mean_relative_width"] > 0
    conf = result.manifest["conformal"]
    assert conf["method"] == "split" and conf["calibration_size"] == 150
    assert result.manifest["predictor"]["dir"].startswith("conformal")  # no second copy


def test_intervals_reload_identically_and_follow_the_confidence(calibrated):
    _, out = calibrated
    bundle = load_bundle(out)
    refs = bundle.split["test"][:50]
    low, high = bundle.predict_interval(refs)
    again_low, again_high = load_bundle(out).predict_interval(refs, 0.9)
    assert np.array_equal(low, again_low) and np.array_equal(high, again_high)
    point = bundle.predict(refs)
    assert np.all((low <= point) & (point <= high) & (low > 0))
    narrow = bundle.predict_interval(refs, 0.5)
    assert np.all(narrow[1] - narrow[0] <= high - low + 1e-12)


def test_cli_evaluate_and_predict_report_intervals(calibrated, nb201_small, capsys):
    _, out = calibrated
    code, stdout, err = run_cli(
        ["evaluate", "--bundle", str(out), "--data", str(nb201_small), "--target",
         "titanx_32", "--confidence", "0.8", "--json", "--no-mlflow"], capsys,
    )  # fmt: skip
    assert code == 0, err
    doc = json.loads(stdout)
    assert {"coverage", "mean_relative_width", "confidence"} <= set(doc)
    assert doc["confidence"] == 0.8
    assert doc["by_family"]["nb201"]["coverage"] == doc["coverage"]
    ref = load_bundle(out).split["test"][0]
    code, stdout, err = run_cli(
        ["predict", "--bundle", str(out), ref, "--json", "--no-mlflow"], capsys
    )
    assert code == 0, err
    row = json.loads(stdout)[0]
    assert row["lower_ms"] <= row["latency_ms"] <= row["upper_ms"] and row["confidence"] == 0.9


def test_small_calibration_set_is_warned_about(nb201_small, tmp_path):
    config = TrainConfig(
        predictor="flops", train_size=100, val_size=20, cal_size=5, conformal="split"
    )
    result = train(nb201_small, "titanx_32", config, tmp_path / "b")
    assert any("calibration set of 5" in w for w in result.warnings)
    assert any("calibration set of 5" in w for w in load_bundle(tmp_path / "b").warnings)


def test_pyfunc_model_gives_bounds_at_the_requested_confidence(nb201_small, tmp_path, mlflow_store):
    import mlflow

    config = TrainConfig(
        predictor="flops", train_size=150, val_size=30, cal_size=100, conformal="split"
    )
    result = train(nb201_small, "titanx_32", config, tmp_path / "b", tracker=Tracker())
    mlflow.set_tracking_uri(mlflow_store)
    model = mlflow.pyfunc.load_model(result.model_uri)
    refs = load_bundle(tmp_path / "b").split["test"][:10]
    wide = model.predict(pd.DataFrame({"network": refs}))
    narrow = model.predict(pd.DataFrame({"network": refs}), params={"confidence": 0.5})
    assert {"lower_ms", "upper_ms"} <= set(wide.columns)
    assert np.all(narrow["upper_ms"] - narrow["lower_ms"] <= wide["upper_ms"] - wide["lower_ms"])
    ev = evaluate(tmp_path / "b", nb201_small, "titanx_32")
    assert "coverage" in ev.metrics
