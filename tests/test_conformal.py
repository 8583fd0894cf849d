"""Conformal intervals: coverage on real held-out nb201 networks, warnings, OOD, persistence."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from latlab.datasets.tables import load_table
from latlab.errors import BundleError, DataError, NotFittedError
from latlab.predictors import make_predictor
from latlab.predictors.conformal import (
    METHODS,
    coverage_report,
    load_conformal,
    make_conformal,
    min_calibration_size,
)
from latlab.predictors.conformal.base import conformal_quantile, import_crepes

NETWORK_METHODS = ("split", "cm-tv", "cm-lv", "cm-o")
DEVICE = "silver_4210r"
NB201 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nb201_latency.csv"


@pytest.fixture(scope="module")
def nb201_split():
    """A fitted flops base and disjoint train / calibration / test sets of one real device."""
    if not NB201.exists():
        pytest.skip(f"shared data not found at {NB201} (only in the development checkout)")
    valid = load_table(NB201).valid(DEVICE)
    nets = list(valid["network"])
    y = valid["latency_ms"].to_numpy(dtype=float)
    perm = np.random.default_rng(7).permutation(len(nets))
    tr, ca, te = perm[:300], perm[300:700], perm[700:2700]

    def pick(idx):
        return [nets[i] for i in idx], y[idx]

    base = make_predictor("flops").fit(*pick(tr))
    return base, pick(tr), pick(ca), pick(te)


@pytest.fixture(scope="module")
def calibrated(nb201_split):
    base, train, cal, _ = nb201_split
    return {
        m: make_conformal(m, base).calibrate(
            *cal, train_networks=train[0], train_latencies_ms=train[1]
        )
        for m in NETWORK_METHODS
    }


def test_coverage_on_held_out_networks_is_near_the_confidence(nb201_split, calibrated):
    _, _, _, (test_nets, test_y) = nb201_split
    point = calibrated["split"].predict(test_nets)
    for method, cp in calibrated.items():
        rep = coverage_report(cp, test_nets, test_y, 0.9, point_ms=point)
        # 400 calibration points, 2000 test networks: the coverage of one calibration has a
        # standard deviation of about 1.5 %; 85-95 % is a band of over 3 sigma.
        assert 85.0 <= rep["coverage"] <= 95.0, (method, rep)
        assert 0 < rep["mean_relative_width"] < 200, (method, rep)
        low, high = cp.predict_interval(test_nets[:300], 0.9)
        assert np.all(low > 0) and np.all(np.isfinite(high))
        assert np.all((low <= point[:300]) & (point[:300] <= high))
    # Normalised methods adapt to the flops proxy's uneven errors: narrower on average.
    width = {
        m: coverage_report(cp, test_nets, test_y, 0.9, point_ms=point)["mean_relative_width"]
        for m, cp in calibrated.items()
    }
    assert width["cm-lv"] < width["split"]


def test_widths_grow_with_the_confidence(nb201_split, calibrated):
    nets = nb201_split[3][0][:200]
    for cp in calibrated.values():
        prev = None
        for c in (0.5, 0.8, 0.9, 0.95):
            low, high = cp.predict_interval(nets, c)
            width = high - low
            if prev is not None:
                assert np.all(width >= prev - 1e-12)
            prev = width


def test_intervals_are_positive_even_for_nonpositive_predictions(nb201_split):
    base, _train, cal, (test_nets, _) = nb201_split
    cp = make_conformal("split", base).calibrate(*cal)
    low, high = cp.predict_interval(test_nets[:5], 0.9, point_ms=[-1.0, 0.0, 1e-9, 5.0, 50.0])
    assert np.all(low > 0) and np.all(high > low)


def test_small_calibration_sets_are_warned_about(nb201_split):
    base, _, (cal_nets, cal_y), (test_nets, _) = nb201_split
    assert min_calibration_size(0.9) == 9 and min_calibration_size(0.5) == 1
    cp = make_conformal("split", base).calibrate(cal_nets[:5], cal_y[:5])
    low, high = cp.predict_interval(test_nets[:3], 0.9)
    assert np.all(low == 0) and np.all(np.isinf(high))
    assert any("calibration set of 5 networks is too small for 90%" in w for w in cp.warnings)
    low, high = cp.predict_interval(test_nets[:3], 0.5)  # 5 points suffice at 50 %
    assert np.all(np.isfinite(high))
    cp = make_conformal("split", base).calibrate(cal_nets[:40], cal_y[:40])
    cp.predict_interval(test_nets[:3], 0.9)
    assert any("varies by about" in w for w in cp.warnings)
    assert not any("too small" in w for w in cp.warnings)


def test_cm_o_flags_networks_far_outside_the_calibration_space(nb201_split, calibrated):
    cp = calibrated["cm-o"]
    far = ["zoo:resnet50", "fcnn:4096-4096-4096-10"]
    mask = cp.ood_mask(far)
    assert mask.tolist() == [True, True]
    cp.warnings.clear()
    low, high = cp.predict_interval(far, 0.9)
    assert np.all(high > low)
    assert any("outside the calibration distribution" in w and "2 of 2" in w for w in cp.warnings)
    # Networks of the space itself are (almost) never flagged.
    test_nets = nb201_split[3][0]
    assert cp.ood_mask(test_nets).mean() < 0.01
    # Training asks through the OutOfDistribution protocol: cm-o answers, split cannot tell.
    from latlab.training import intervals

    assert intervals.ood_mask(cp, far).tolist() == [True, True]
    assert intervals.ood_mask(calibrated["split"], far) is None


def test_save_and_load_give_identical_intervals(nb201_split, calibrated, tmp_path):
    nets = nb201_split[3][0][:100]
    for method, cp in calibrated.items():
        cp.save(tmp_path / method)
        again = load_conformal(tmp_path / method)
        assert again.method == method and again.n_calibration == cp.n_calibration
        for c in (0.8, 0.9):
            a, b = cp.predict_interval(nets, c), again.predict_interval(nets, c)
            assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
        files = {p.name for p in (tmp_path / method).iterdir()}
        assert "conformal.json" in files and "base" in files
        assert not any(p.suffix in (".pkl", ".pickle") for p in (tmp_path / method).rglob("*"))


def test_corrupt_or_foreign_saves_are_refused(calibrated, tmp_path):
    with pytest.raises(BundleError, match=r"no conformal\.json"):
        load_conformal(tmp_path / "nothing")
    calibrated["cm-tv"].save(tmp_path / "tv")
    doc = json.loads((tmp_path / "tv" / "conformal.json").read_text())
    doc["schema"] = 99
    (tmp_path / "tv" / "conformal.json").write_text(json.dumps(doc))
    with pytest.raises(BundleError, match="schema 99"):
        load_conformal(tmp_path / "tv")
    # A skops file holding a type outside the allow-list is refused, not loaded.
    import skops.io as sio
    from sklearn.linear_model import SGDRegressor

    calibrated["cm-lv"].save(tmp_path / "lv")
    (tmp_path / "lv" / "difficulty.skops").write_bytes(
        sio.dumps({"difficulty": DataError("a type nobody trusts")})
    )
    with pytest.raises(BundleError, match=r"does not trust: latlab\.errors\.DataError"):
        load_conformal(tmp_path / "lv")
    (tmp_path / "lv" / "difficulty.skops").write_bytes(sio.dumps({"difficulty": SGDRegressor()}))
    with pytest.raises(BundleError, match="holds no difficulty estimator"):
        load_conformal(tmp_path / "lv")
    (tmp_path / "lv" / "difficulty.skops").write_bytes(b"not a zip")
    with pytest.raises(BundleError, match="corrupt skops"):
        load_conformal(tmp_path / "lv")


def test_bad_input_is_named(nb201_split, calibrated):
    base, _train, cal, (test_nets, _) = nb201_split
    with pytest.raises(DataError, match=r"unknown conformal method 'nope' \(known: .*cm-o.*split"):
        make_conformal("nope", base)
    with pytest.raises(DataError, match="fit FlopsPredictor first"):
        make_conformal("split", make_predictor("flops"))
    with pytest.raises(DataError, match="no option 'kk'"):
        make_conformal("cm-o", base, kk=3)
    with pytest.raises(NotFittedError, match="not calibrated"):
        make_conformal("split", base).predict_interval(test_nets[:2])
    for bad in (0, 1, 1.5, -0.1, float("nan"), "high"):
        with pytest.raises(DataError, match="confidence"):
            calibrated["split"].predict_interval(test_nets[:2], bad)
    with pytest.raises(DataError, match="lengths must match"):
        make_conformal("split", base).calibrate(cal[0][:3], cal[1][:2])
    with pytest.raises(DataError, match="invalid latency"):
        make_conformal("split", base).calibrate(cal[0][:3], [1.0, -2.0, 3.0])


def test_difficulty_falls_back_to_half_the_calibration_set(nb201_split):
    base, _, (cal_nets, cal_y), (test_nets, test_y) = nb201_split
    cp = make_conformal("cm-lv", base).calibrate(cal_nets, cal_y)
    assert cp.n_calibration == len(cal_nets) - len(cal_nets) // 2
    assert any("half of the 400 calibration networks" in w for w in cp.warnings)
    rep = coverage_report(cp, test_nets, test_y, 0.9)
    assert 84.0 <= rep["coverage"] <= 96.0


def test_importing_crepes_leaves_warning_filters_alone():
    before = list(warnings.filters)
    import_crepes()
    assert list(warnings.filters) == before


def test_every_method_is_registered():
    assert set(NETWORK_METHODS) <= set(METHODS)


@settings(max_examples=60, deadline=None)
@given(
    scores=st.lists(st.floats(0, 100, allow_nan=False), min_size=1, max_size=60),
    confidence=st.floats(0.05, 0.99),
)
def test_quantile_is_the_finite_sample_conformal_quantile(scores, confidence):
    s = np.asarray(scores)
    n = len(s)
    q = conformal_quantile(s, confidence)
    rank = math.ceil((n + 1) * confidence - 1e-9)
    if rank > n:
        assert math.isinf(q)
    else:
        # q is a calibration score and at least ceil((n+1)c) scores are <= q.
        assert q in s and np.sum(s <= q) >= rank


def test_quantile_exists_at_the_float_boundary():
    # (1 - 0.9) * (9 + 1) is 0.999... in floating point: the 9th smallest of 9 scores is still
    # the 90 % quantile (crepes' own index rounds it away to an unbounded interval)
    assert conformal_quantile(np.arange(1.0, 10.0), 0.9) == 9.0
    assert math.isinf(conformal_quantile(np.arange(1.0, 9.0), 0.9))
