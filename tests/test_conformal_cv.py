"""CV+ / jackknife+ intervals (``cv+``): coverage from small data, ties and heavy tails."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from latlab.cli import main
from latlab.datasets import resolve
from latlab.datasets.spaces import sample
from latlab.predictors import make_predictor
from latlab.predictors.conformal import load_conformal, make_conformal
from latlab.training.bundle import load_bundle


@pytest.fixture(scope="module")
def heavy_tailed():
    """fbnet networks on a device whose latency is a MACs/bytes model times heavy-tailed noise
    (Student t, 3 degrees of freedom, in log space), quantised to whole 0.5 ms (ties)."""
    refs = sample("fbnet", 560, seed=11)
    t = [resolve(r).totals for r in refs]
    base = np.array([1.0 + x.macs * 1e-7 + x.bytes_read * 2e-8 for x in t])
    rng = np.random.default_rng(3)
    ms = base * np.exp(0.08 * rng.standard_t(3, len(refs)))
    return refs, np.maximum(np.round(ms * 2) / 2, 0.5)


@pytest.mark.parametrize(("n", "folds"), [(60, 10), (20, 20)])
def test_coverage_from_few_networks(heavy_tailed, n, folds):
    refs, y = heavy_tailed
    base = make_predictor("flops").fit(refs[:n], y[:n])
    w = make_conformal("cv+", base, folds=folds).calibrate(refs[:n], y[:n])
    assert w.n_calibration == n and len(w.models_) == folds
    test, ty = refs[160:], y[160:]
    point = w.predict(test)
    low, high = w.predict_interval(test, 0.9, point_ms=point)
    assert np.all(np.isfinite(high)) and np.all(low <= point) and np.all(point <= high)
    coverage = float(np.mean((ty >= low) & (ty <= high)))
    assert 0.84 <= coverage <= 0.99, coverage


def test_jackknife_plus_on_ten_networks_is_bounded_at_90_not_95(heavy_tailed):
    refs, y = heavy_tailed
    base = make_predictor("flops").fit(refs[:10], y[:10])
    w = make_conformal("cv+", base).calibrate(refs[:10], y[:10])
    low, high = w.predict_interval(refs[200:220], 0.9)
    assert np.all(np.isfinite(high)) and np.all(low > 0)
    _, high95 = w.predict_interval(refs[200:220], 0.95)
    assert np.all(np.isinf(high95))
    assert any("too small for 95% confidence" in m for m in w.warnings)


def test_save_and_load_give_the_same_intervals(heavy_tailed, tmp_path):
    refs, y = heavy_tailed
    base = make_predictor("flops").fit(refs[:40], y[:40])
    w = make_conformal("cv+", base, folds=5, seed=2).calibrate(refs[:40], y[:40])
    again = load_conformal(w.save(tmp_path / "w"))
    a, b = w.predict_interval(refs[300:340], 0.8), again.predict_interval(refs[300:340], 0.8)
    np.testing.assert_allclose(a[0], b[0])
    np.testing.assert_allclose(a[1], b[1])


def test_few_shot_bundle_with_cv_plus(heavy_tailed, tmp_path, capsys):
    refs, y = heavy_tailed
    src = pd.DataFrame({"network": refs[:120], "a": y[:120] * 0.7 + 0.1, "b": y[:120] ** 1.1})
    src.to_csv(tmp_path / "src.csv", index=False)
    pd.DataFrame({"network": refs[:10], "new": y[:10]}).to_csv(tmp_path / "k10.csv", index=False)
    argv = ["train", "--data", str(tmp_path / "k10.csv"), "--target", "new", "--json"]
    argv += ["--predictor", "transfer", "--pretrain", str(tmp_path / "src.csv")]
    argv += ["--param", "source_predictor=flops", "--conformal", "cv+", "--no-mlflow"]
    try:
        main([*argv, "--out", str(tmp_path / "b")])
    except SystemExit as exc:
        assert not exc.code
    result = json.loads(capsys.readouterr().out)
    assert result["split"]["train"] == 10 and result["split"]["cal"] == 0
    b = load_bundle(tmp_path / "b")
    assert b.calibrated
    low, high = b.predict_interval(refs[200:260], 0.9)
    assert np.all(np.isfinite(high)) and np.all(low < high)


# --------------------------------------------------------------------------- oob (rf)


@pytest.fixture(scope="module")
def forest(heavy_tailed):
    refs, y = heavy_tailed
    base = make_predictor("rf", n_estimators=120, n_jobs=1).fit(refs[:300], y[:300])
    return base, make_conformal("oob", base).calibrate(refs[:300], y[:300])


def test_oob_predictions_are_scikit_learns(heavy_tailed, forest):
    from sklearn.ensemble import RandomForestRegressor

    from latlab.datasets import resolve as resolve_ref

    refs, y = heavy_tailed
    base, w = forest
    x = base.features_.transform([resolve_ref(r) for r in refs[:300]])
    params = base.forest_.get_params()
    twin = RandomForestRegressor(**{**params, "oob_score": True}).fit(x, np.log(y[:300]))
    np.testing.assert_allclose(w.oob_predictions(refs[:300]), np.exp(twin.oob_prediction_))
    # every network calibrates: nothing is carved out of the training set
    assert w.n_calibration == 300


def test_oob_coverage_on_heavy_tailed_ties(heavy_tailed, forest):
    refs, y = heavy_tailed
    _, w = forest
    test, ty = refs[300:], y[300:]
    point = w.predict(test)
    low, high = w.predict_interval(test, 0.9, point_ms=point)
    assert np.all(low <= point) and np.all(point <= high) and np.all(np.isfinite(high))
    coverage = float(np.mean((ty >= low) & (ty <= high)))
    assert 0.85 <= coverage <= 0.97, coverage
    # narrower than a split of the same networks would give at 80 % than at 95 %
    l80, h80 = w.predict_interval(test, 0.8, point_ms=point)
    assert np.median(np.log(h80 / l80)) < np.median(np.log(high / low))


def test_oob_saves_and_loads_and_refuses_what_it_cannot_do(heavy_tailed, forest, tmp_path):
    from latlab.errors import DataError

    refs, y = heavy_tailed
    _, w = forest
    again = load_conformal(w.save(tmp_path / "oob"))
    a, b = w.predict_interval(refs[400:440], 0.9), again.predict_interval(refs[400:440], 0.9)
    np.testing.assert_allclose(a[0], b[0])
    np.testing.assert_allclose(a[1], b[1])
    flops = make_predictor("flops").fit(refs[:50], y[:50])
    with pytest.raises(DataError, match="needs a random forest"):
        make_conformal("oob", flops).calibrate(refs[:50], y[:50])
    with pytest.raises(DataError, match="training networks, got 40"):
        make_conformal("oob", forest[0]).calibrate(refs[:40], y[:40])


def test_train_rf_with_oob_intervals_from_the_cli(heavy_tailed, tmp_path, capsys):
    refs, y = heavy_tailed
    pd.DataFrame({"network": refs[:200], "dev": y[:200]}).to_csv(tmp_path / "t.csv", index=False)
    argv = ["train", "--data", str(tmp_path / "t.csv"), "--target", "dev", "--json"]
    argv += ["--predictor", "rf", "--param", "n_estimators=60", "--conformal", "oob"]
    try:
        main([*argv, "--no-mlflow", "--out", str(tmp_path / "b")])
    except SystemExit as exc:
        assert not exc.code
    result = json.loads(capsys.readouterr().out)
    assert result["split"]["cal"] == 0
    b = load_bundle(tmp_path / "b")
    low, high = b.predict_interval(refs[300:400], 0.9)
    ty = y[300:400]
    assert np.all(np.isfinite(high)) and 0.8 <= np.mean((ty >= low) & (ty <= high)) <= 1.0
