"""The benchmarks that say what limits a target: ``rank_ceiling.py`` (the ρ a column allows, on
columns whose answer is known) and ``conformal_band_odds.py`` (how often a coverage band can be
met with n calibration points)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from latlab.datasets.spaces.nb201 import sample_nb201

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _module(name: str = "rank_ceiling"):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_tie_ceiling_is_one_without_ties_and_below_one_with_them():
    rc = _module()
    y = np.random.default_rng(0).random(500)
    assert rc.tie_ceiling(y, 0) == pytest.approx(1.0)
    whole = np.round(y * 3)  # four distinct values, as a coarse timer gives
    assert 0.8 < rc.tie_ceiling(whole, 0) < 0.99


@pytest.fixture
def table(tmp_path):
    """An nb201 table whose `additive` column is a sum of op costs and `noise` is none of it."""
    refs = sample_nb201(420, seed=3)
    cost = {"nor_conv_3x3": 3.0, "nor_conv_1x1": 1.0, "avg_pool_3x3": 0.5, "skip_connect": 0.1}
    rng = np.random.default_rng(1)
    additive = [1.0 + sum(c * r.count(op) for op, c in cost.items()) for r in refs]
    frame = pd.DataFrame(
        {"network": refs, "additive": additive, "noise": rng.uniform(5, 6, len(refs))}
    )
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    return path


def test_ceiling_separates_a_learnable_column_from_noise(table, tmp_path):
    rc = _module()
    out = tmp_path / "out"
    args = ["--data", str(table), "--out", str(out), "--sizes", "100,300",
            "--predictors", "gbm", "--test", "100"]  # fmt: skip
    assert rc.main(args) == 0
    doc = json.loads((out / "results.json").read_text())
    assert doc["columns"]["additive"]["rho"]["gbm"]["300"] > 0.9
    assert abs(doc["columns"]["noise"]["rho"]["gbm"]["300"]) < 0.3
    assert doc["columns"]["additive"]["tie_ceiling"] < 1.0  # op-count sums tie
    text = (out / "report.md").read_text()
    assert "| additive |" in text and "rank_ceiling.py" in text
    # resumable: a rerun with the same settings keeps the columns and their figures
    seconds = doc["seconds"]
    assert rc.main(args) == 0
    assert json.loads((out / "results.json").read_text())["seconds"] == seconds


def test_bad_column_fails_before_any_work(table, tmp_path, capsys):
    rc = _module()
    out = tmp_path / "never"
    with pytest.raises(SystemExit) as exc:
        rc.main(["--data", str(table), "--out", str(out), "--columns", "nope"])
    assert exc.value.code == 2
    assert "'nope' is not a device column" in capsys.readouterr().err
    assert not out.exists()


def test_band_odds_follow_the_beta_law_of_conformal_coverage():
    odds = _module("conformal_band_odds").band_odds
    one = odds(10, 0.9, seeds=1, low=0.87, high=0.95, draws=100_000)
    assert one["rank"] == 10
    assert one["mean"] == pytest.approx(10 / 11, abs=0.002)  # Beta(10, 1)
    assert one["sd"] == pytest.approx((10 / (11**2 * 12)) ** 0.5, rel=0.03)
    five = odds(10, 0.9, seeds=5, low=0.87, high=0.95, draws=100_000)
    assert five["sd"] == pytest.approx(one["sd"] / 5**0.5, rel=0.05)
    many = odds(900, 0.9, seeds=5, low=0.87, high=0.95, draws=20_000)
    assert five["p_device"] < 0.8 < 0.999 < many["p_device"]
    with pytest.raises(ValueError, match="cannot give a finite"):
        odds(5, 0.9, seeds=5, low=0.87, high=0.95, draws=10)
