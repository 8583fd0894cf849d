"""Calibration on real bit-packed micro-benchmarks, and the lxnorop predictor."""

import numpy as np
import pytest

from latlab.errors import DataError
from latlab.predictors import load_predictor, make_predictor
from latlab.predictors.bnn import forward, load_target_file, write_target
from latlab.predictors.bnn.calibrate import (
    TERMS,
    _binconv,
    _binfc,
    _chain,
    _conv,
    _eltwise,
    _fc,
    benchmark_suite,
    bitpacked_time_ms,
    calibrate,
    composition_weights,
    fit_clocks,
)


def _fast_time(net):
    return bitpacked_time_ms(net, min_time_s=0.02, min_repeats=5)


SMALL_SUITE = [
    _binfc(256, 256),
    _binfc(2048, 512),
    _binfc(1024, 2048),
    _binfc(8192, 256),
    _binconv(32, 16, 32, 3),
    _binconv(64, 8, 64, 3),
    _binconv(16, 16, 64, 1),
    _fc(512, 512),
    _fc(1024, 256),
    _conv(3, 16, 16, 3),
    _eltwise(32, 16),
    _chain(2),
    _chain(8),
]


@pytest.fixture(scope="module")
def calibration():
    return calibrate(_fast_time, networks=SMALL_SUITE, rounds=1, cache_bytes=None)


def test_calibration_fits_positive_constants(calibration, tmp_path):
    t = calibration.target
    assert t.name == "host-calibrated" and t.bus_width == 64 and t.cores == 1
    assert t.clocks_xnorop > 0 and t.clocks_lxnorop >= t.clocks_xnorop
    assert t.clocks_layer > 0  # the numpy backend pays for every executed layer
    for key in ("mac", "flop", "pack", "threshold", "inference"):
        assert getattr(t, f"clocks_{key}") >= 0
    assert len(calibration.rows) == len(SMALL_SUITE)
    # the fitted model reproduces its own benchmarks within a loose bound
    for row in calibration.rows:
        assert 0.33 < row["fitted_ms"] / row["measured_ms"] < 3.0, row
    path = write_target(t, tmp_path / "host.json")
    assert load_target_file(path) == t


def test_calibrated_model_predicts_an_unseen_network(calibration):
    ref = "bnn-cnn:1x16x16-c16-c32-p-f64-10"
    measured = _fast_time(ref)
    predicted = forward(ref, calibration.target).latency_ms
    assert 0.33 < predicted / measured < 3.0


def test_fit_clocks_solves_consistent_systems():
    rng = np.random.default_rng(0)
    x = rng.uniform(1, 100, (30, 4))
    c = np.array([2.0, 0.0, 0.5, 7.0])
    np.testing.assert_allclose(fit_clocks(x, x @ c), c, atol=1e-6)
    x[:, 1] = 0  # a term no benchmark exercises stays 0
    assert fit_clocks(x, x @ c)[1] == 0
    with pytest.raises(DataError, match="finite and > 0"):
        fit_clocks(x, np.r_[x[:-1] @ c, -1.0])


def test_suites_and_composition_weights():
    quick, full = benchmark_suite(True), benchmark_suite(False)
    assert len(full) > len(quick) >= len(TERMS)
    names = {g.reference for g in full}
    assert len(names) == len(full) and all(n.startswith("bnn-bench:") for n in names)
    w = composition_weights(quick)
    whole = np.array([g.meta.get("role") == "network" for g in quick])
    assert 0 < whole.sum() < len(quick)
    assert w[whole].sum() == pytest.approx(w[~whole].sum())
    assert np.all(composition_weights(SMALL_SUITE) == 1)  # no whole networks: plain fit
    x = np.random.default_rng(1).uniform(1, 10, (6, 2))
    y = x @ np.array([1.0, 2.0]) * np.r_[1, 1, 1, 1, 1.5, 1.5]
    light = fit_clocks(x, y, np.r_[1, 1, 1, 1, 0.01, 0.01])
    heavy = fit_clocks(x, y, np.r_[0.01, 0.01, 0.01, 0.01, 1, 1])
    assert (x[4:] @ heavy - y[4:]).std() < (x[4:] @ light - y[4:]).std() + 1e-12


def test_calibration_input_errors():
    with pytest.raises(DataError, match=f"at least {len(TERMS)} networks"):
        calibrate(_fast_time, networks=SMALL_SUITE[:3])
    with pytest.raises(DataError, match="thread CPU clock needs threads=1"):
        bitpacked_time_ms(SMALL_SUITE[0], threads=2, clock="thread")
    with pytest.raises(DataError, match="unknown clock"):
        bitpacked_time_ms(SMALL_SUITE[0], clock="sundial")


def test_lxnorop_predictor_fits_saves_and_reloads(tmp_path):
    nets = SMALL_SUITE
    y = [_fast_time(n) for n in nets]
    model = make_predictor("lxnorop").fit(nets, y)
    pred = model.predict(nets)
    assert pred.shape == (len(nets),) and np.all(pred > 0)
    assert np.median(np.abs(pred - y) / y) < 0.5
    model.save(tmp_path / "m")
    again = load_predictor(tmp_path / "m")
    np.testing.assert_allclose(again.predict(nets), pred)
    datasheet = make_predictor("lxnorop", target="rpi4b", fit_constants=False).fit(nets, y)
    assert datasheet.predict(["bnn-fcnn:784-512-512-10"])[0] == pytest.approx(
        forward("bnn-fcnn:784-512-512-10", "rpi4b").latency_ms
    )
