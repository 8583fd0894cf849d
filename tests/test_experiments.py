"""The reproduction scripts, end to end on tiny configurations (real measurements, real fits)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from latlab.errors import DataError
from latlab.experiments.brpnas import BrpnasConfig, pruned_graph_ceiling, run, split
from latlab.experiments.fcnn_protocol import FcnnProtocolConfig, noise_floor
from latlab.experiments.fcnn_protocol import run as run_fcnn


def test_noise_floor_golden():
    a = np.array([1.0, 2.0, 3.0, 4.0])
    b = np.array([1.1, 1.8, 3.0, 4.4])  # differences -0.1, 0.2, 0, -0.4
    nf = noise_floor(a, b)
    assert nf["retest"]["mae"] == pytest.approx(0.7 / 4)
    assert nf["retest"]["mse"] == pytest.approx((0.01 + 0.04 + 0.16) / 4)
    assert nf["floor"]["mse"] == pytest.approx(nf["retest"]["mse"] / 2)
    assert nf["floor"]["mae"] == pytest.approx(0.7 / 4 / math.sqrt(2))


def test_split_is_seeded_and_disjoint():
    tr, va, te = split(50, 3, 30, 10)
    assert len(set(tr) | set(va) | set(te)) == 50 and len(te) == 10
    np.testing.assert_array_equal(split(50, 3, 30, 10)[0], tr)
    with pytest.raises(DataError, match="need more than 30 \\+ 20"):
        split(50, 0, 30, 20)


def test_pruned_graph_ceiling_groups_equal_pruned_cells():
    # Two archs that differ only in a dead conv have the same BRP-NAS pruned graph.
    refs = [
        "nb201:|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|",
        "nb201:|nor_conv_1x1~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|",
        "nb201:|nor_conv_3x3~0|+|none~0|none~1|+|nor_conv_3x3~0|none~1|none~2|",
    ]
    out = pruned_graph_ceiling(refs, np.array([1.0, 2.0, 5.0]))
    assert out["groups"] == 2
    # The shared group's median (1.5) is within 10 % of neither 1.0 nor 2.0.
    assert out["acc10"] == pytest.approx(100 / 3)


def test_brpnas_runs_resumes_and_reports(nb201_table_path, tmp_path):
    import pandas as pd

    small = tmp_path / "nb201_small.csv"
    pd.read_csv(nb201_table_path).sample(n=300, random_state=0).to_csv(small, index=False)
    cfg = BrpnasConfig(
        str(small),
        str(tmp_path / "b"),
        devices=["1080ti_1"],
        seeds=1,
        n_train=60,
        n_val=20,
        max_test=200,
        predictors=["flops", "gbm-onehot", "gbm"],
        overrides={"gbm": {"n_estimators": 200}, "gbm-onehot": {"n_estimators": 200}},
        threads=1,
    )
    doc = run(cfg)
    res = doc["results"]["1080ti_1"]
    assert set(res) == {"flops", "gbm-onehot", "gbm"}
    assert res["gbm"]["test"]["n"]["mean"] == 200
    assert 0 < res["gbm"]["test"]["acc10"]["mean"] <= 100
    report = (tmp_path / "b" / "report.md").read_text()
    assert "| 1080ti_1 |" in report and "pruned-graph ceiling" in report
    lines = (tmp_path / "b" / "runs.jsonl").read_text().splitlines()
    assert len(lines) == 3
    again = run(cfg)  # resumes: nothing is refitted, the same figures come back
    assert (tmp_path / "b" / "runs.jsonl").read_text().splitlines() == lines
    assert again["results"] == doc["results"]
    json.loads((tmp_path / "b" / "metrics.json").read_text())
    with pytest.raises(DataError, match="no device column 'nope'"):
        run(BrpnasConfig(str(small), str(tmp_path / "c"), devices=["nope"]))


def test_fcnn_protocol_measures_resumes_and_scores(tmp_path):
    cfg = FcnnProtocolConfig(
        out=str(tmp_path / "f"),
        count=30,
        repeats=20,
        time_budget_s=0.02,
        max_warmup_s=0.05,
        seeds=1,
        fit_threads=1,
    )
    doc = run_fcnn(cfg)
    assert doc["dataset"]["split"] == [19, 5, 6]
    assert doc["noise_floor"]["n"] == 6 and doc["noise_floor"]["retest"]["mae"] > 0
    fc = doc["results"]["fcnn"]
    assert fc["mae"]["mean"] > 0 and fc["mae_over_floor"]["mean"] > 0
    assert (tmp_path / "f" / "report.md").read_text().startswith("# FCNN estimator protocol")
    again = run_fcnn(cfg)  # every network is in the store: nothing is measured again
    assert again["dataset"]["measure_s"] < doc["dataset"]["measure_s"]
    assert again["noise_floor"] == doc["noise_floor"]
