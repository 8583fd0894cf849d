"""`latlab train --predictor transfer` on a few-shot table: the default split works for k >= 3.

Ten (or three) networks of a new device cannot give a split-conformal calibration set, so
below :func:`min_rows_for_calibration` rows the default trains on every row and calibrates by
CV+ over them (jackknife+ with 10 networks; bounded at 90 % from 9 networks on), and without
intervals below that, saying so either way; an explicit ``--cal-size`` still carves a split.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cli_helpers import run_cli
from latlab.datasets import resolve
from latlab.datasets.spaces import sample
from latlab.training.bundle import load_bundle
from latlab.training.splits import min_rows_for_calibration


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    refs = sample("fbnet", 60, seed=2)
    macs = np.array([resolve(r).totals.macs for r in refs], dtype=float)
    layers = np.array([resolve(r).totals.n_layers for r in refs], dtype=float)
    d = tmp_path_factory.mktemp("fewshot")
    src = pd.DataFrame(
        {"network": refs, "gpu": 1 + macs * 2e-8, "cpu": 0.5 + macs * 5e-8 + layers * 1e-3}
    )
    src.to_csv(d / "sources.csv", index=False)
    target = 0.2 + macs * 3e-8 + layers * 2e-3
    return d, refs, target


@pytest.mark.parametrize("k", [3, 10])
def test_transfer_trains_on_k_networks_by_default(tables, k, capsys):
    d, refs, target = tables
    assert k < min_rows_for_calibration(0.9) == 90
    kt = d / f"k{k}.csv"
    pd.DataFrame({"network": refs[:k], "new": target[:k]}).to_csv(kt, index=False)
    out = d / f"bundle{k}"
    argv = ["train", "--data", str(kt), "--target", "new", "--predictor", "transfer", "--json"]
    argv += ["--pretrain", str(d / "sources.csv"), "--out", str(out)]
    code, stdout, err = run_cli(argv, capsys)
    assert code == 0, err
    result = json.loads(stdout)
    assert result["split"]["train"] == k  # every network trains the head
    assert any("too few for a calibration split" in w for w in result["warnings"])
    b = load_bundle(out)
    pred = b.predict(refs[k:])
    rho = pd.Series(pred).corr(pd.Series(target[k:]), method="spearman")
    assert rho > 0.9
    if k < 9:  # jackknife+ is unbounded at 90 % below 9 networks: no intervals
        assert not b.calibrated
        assert any("without conformal intervals" in w for w in result["warnings"])
        return
    assert b.calibrated and b.manifest["conformal"]["method"] == "cv+"
    low, high = b.predict_interval(refs[k:])
    assert np.all(np.isfinite(low)) and np.all(np.isfinite(high))
    assert np.all((low <= pred) & (pred <= high))


def test_k10_real_table_gives_intervals_through_the_cli(nb201_table_path, tmp_path, capsys):
    """The issue's command on 10 real rows of the nb201 table: `train` calibrates by CV+ and
    `predict --json` prints bounded intervals; they cover about 90 % of the other networks."""
    table = pd.read_csv(nb201_table_path)
    rows = table.sample(10, random_state=1)
    k10 = tmp_path / "K10.csv"
    rows[["network", "pixel3"]].to_csv(k10, index=False)
    out = tmp_path / "B"
    argv = ["train", "--data", str(k10), "--target", "pixel3", "--predictor", "transfer"]
    argv += ["--pretrain", str(nb201_table_path), "--out", str(out), "--no-mlflow"]
    code, _stdout, err = run_cli(argv, capsys)
    assert code == 0, err
    rest = table[~table.network.isin(rows.network) & (table.pixel3 > 0.05)]
    test = rest.sample(300, random_state=2)
    code, stdout, err = run_cli(
        ["predict", "--bundle", str(out), "--json", "--no-mlflow", *test.network[:3]], capsys
    )
    assert code == 0, err
    doc = json.loads(stdout)
    assert [d["confidence"] for d in doc] == [0.9] * 3
    assert all(0 < d["lower_ms"] < d["latency_ms"] < d["upper_ms"] < 1e3 for d in doc)
    low, high = load_bundle(out).predict_interval(list(test.network))
    y = test.pixel3.to_numpy()
    coverage = float(np.mean((y >= low) & (y <= high)))
    assert 0.8 <= coverage <= 1.0, coverage


def test_explicit_cal_size_still_calibrates(tables, capsys):
    d, refs, target = tables
    kt = d / "k40.csv"
    pd.DataFrame({"network": refs[:40], "new": target[:40]}).to_csv(kt, index=False)
    out = d / "bundle40"
    argv = [
        "train",
        "--data",
        str(kt),
        "--target",
        "new",
        "--predictor",
        "transfer",
        "--cal-size",
        "20",
    ]
    code, _out, err = run_cli(
        [*argv, "--pretrain", str(d / "sources.csv"), "--out", str(out)], capsys
    )
    assert code == 0, err
    assert load_bundle(out).calibrated


def test_sources_intervals_replay_k_shot_transfer_on_the_source_devices(nb201_small, tmp_path):
    """``--conformal sources``: scores from the source devices' simulated k-shot runs (2
    sources x 2 draws x 200 test networks), bounded intervals around the point, saved and
    reloaded exactly; refused for a predictor that is not a transfer predictor."""
    from latlab.errors import DataError
    from latlab.predictors import make_predictor
    from latlab.predictors.conformal import load_conformal, make_conformal

    table = pd.read_csv(nb201_small)
    table = table[table.pixel3 > 0.05]
    refs, y = list(table.network), table.pixel3.to_numpy()
    model = make_predictor(
        "transfer", pretrain=str(nb201_small), target_exclude="pixel3", min_ms=0.05
    ).fit(refs[:10], y[:10])
    w = make_conformal("sources", model).calibrate(refs[:10], y[:10])
    assert w.n_calibration == 2 * 2 * 200
    low, high = w.predict_interval(refs[10:], 0.9)
    # Around the wrapper's point: the model's, raised to half the fastest calibration latency
    # (pixel3 prunes dead ops, and the additive pseudo-source predicts some cells below it).
    point = w.clamp(model.predict(refs[10:]))
    assert np.all(np.isfinite(high)) and np.all((low < point) & (point < high))
    coverage = float(np.mean((y[10:] >= low) & (y[10:] <= high)))
    assert 0.5 <= coverage <= 1.0, coverage
    # a higher confidence gives a wider interval
    low95, high95 = w.predict_interval(refs[10:], 0.95)
    assert np.all(high95 >= high) and np.all(low95 <= low)
    w.save(tmp_path / "w")
    again = load_conformal(tmp_path / "w")
    np.testing.assert_allclose(again.predict_interval(refs[10:40], 0.9)[1], high[:30], rtol=1e-9)
    flops = make_predictor("flops").fit(refs[:10], y[:10])
    with pytest.raises(DataError, match="needs a transfer predictor"):
        make_conformal("sources", flops).calibrate(refs[:10], y[:10])
