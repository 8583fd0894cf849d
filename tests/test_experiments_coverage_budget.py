"""``coverage-budget``: intervals from a network budget alone, on rows of the shared tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from latlab.datasets.tables import NB201_MIN_MS, load_table
from latlab.errors import DataError
from latlab.experiments.coverage_budget import METHODS, one_device, plan
from latlab.experiments.runner import run_experiment

FBNET = Path(__file__).resolve().parents[2] / "shared" / "data" / "fbnet_latency.csv"


@pytest.fixture(scope="module")
def fbnet_pixel3() -> tuple[list[str], np.ndarray]:
    if not FBNET.exists():
        pytest.skip("the shared fbnet table is not beside this checkout")
    v = load_table(FBNET, NB201_MIN_MS).valid("pixel3")  # whole milliseconds: ties
    return list(v["network"])[:700], v["latency_ms"].to_numpy(dtype=float)[:700]


def test_every_method_covers_from_the_budget_alone(fbnet_pixel3):
    nets, y = fbnet_pixel3
    budget, test = np.arange(200), np.arange(200, 700)
    row = one_device(nets, y, budget, test, seed=0, threads=1)
    assert set(row) == {label for label, _, _ in METHODS}
    split, oob, cv = row["rf split"], row["rf oob"], row["gbm cv+"]
    # split spends part of the budget on calibration; oob and cv+ train and calibrate on all
    assert split["trained_on"] + split["calibration"] == 200 and split["calibration"] >= 19
    assert oob["trained_on"] == oob["calibration"] == 200
    assert cv["trained_on"] == cv["calibration"] == 200
    for r in row.values():
        assert 80.0 <= r["0.9"]["coverage"] <= 99.0, row
        assert r["0.8"]["median_relative_width"] < r["0.95"]["median_relative_width"]
        assert r["point"]["mape"] < 15.0


def test_plan_scales_to_small_tables_and_refuses_tiny_ones():
    s = plan(["a", "b", "c", "d"], {"a": 150, "b": 5000, "c": 5000, "d": 5000}, quick=True)
    assert (s.budget, s.n_test, len(s.devices), s.seeds) == (90, 60, 3, 1)
    full = plan(["a"], {"a": 5000}, quick=False)
    assert (full.budget, full.n_test, full.seeds) == (900, 2000, 3)
    with pytest.raises(DataError, match="'a' has 40 valid rows"):
        plan(["a"], {"a": 40}, quick=False)


def test_quick_run_on_a_small_table_writes_the_report_and_resumes(fbnet_pixel3, tmp_path):
    nets, y = fbnet_pixel3
    table = tmp_path / "t.csv"
    pd.DataFrame({"network": nets[:150], "pixel3": y[:150]}).to_csv(table, index=False)
    res = run_experiment("coverage-budget", out=tmp_path / "r", quick=True, data=table)
    report = (tmp_path / "r" / "report.md").read_text()
    assert "| pixel3 |" in report and "budget 90 networks" in report
    assert res.summary["rf oob: columns in band"] in (0, 1)
    again = run_experiment("coverage-budget", out=tmp_path / "r", quick=True, data=table)
    assert again.summary == res.summary  # resumed from runs.jsonl, nothing refitted
