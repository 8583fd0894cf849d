"""`latlab nas --space fbnet|ofa --json` with a calibrated bundle trained on that space."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cli_helpers import run_cli
from latlab.cli import main
from latlab.datasets import resolve
from latlab.datasets.spaces import sample


@pytest.fixture(scope="module", params=["fbnet", "ofa"])
def space_bundle(request, tmp_path_factory):
    name = request.param
    refs = sample(name, 150, seed=5)
    t = [resolve(r).totals for r in refs]
    ms = np.array([0.3 + x.macs * 2e-8 + x.n_layers * 2e-3 for x in t])
    d = tmp_path_factory.mktemp(name)
    pd.DataFrame({"network": refs, "dev": ms}).to_csv(d / "t.csv", index=False)
    argv = ["train", "--data", str(d / "t.csv"), "--target", "dev", "--predictor", "gbm"]
    argv += ["--param", "n_estimators=200", "--param", "n_jobs=1", "--cal-size", "30"]
    try:
        main([*argv, "--no-mlflow", "--out", str(d / "b")])
    except SystemExit as exc:
        assert not exc.code
    return name, d / "b", float(np.median(ms))


def test_nas_searches_the_bundles_space(space_bundle, capsys):
    name, bundle, budget = space_bundle
    argv = ["nas", "--bundle", str(bundle), "--budget-ms", f"{budget:.4f}", "--space", name]
    code, out, err = run_cli([*argv, "--cycles", "80", "--population", "16", "--json"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["bound"] == "upper" and result["evaluated"] == 96
    best = result["best"]
    assert best and all(c["network"].startswith(f"{name}:") for c in best)
    assert all(c["bound_ms"] <= budget for c in best)
    assert [c["objective"] for c in best] == sorted((c["objective"] for c in best), reverse=True)


def test_predict_json_on_the_space(space_bundle, capsys):
    name, bundle, _ = space_bundle
    refs = sample(name, 3, seed=99)
    code, out, err = run_cli(["predict", *refs, "--bundle", str(bundle), "--json"], capsys)
    assert code == 0, err
    rows = json.loads(out)
    assert [r["network"] for r in rows] == refs
    assert all(r["lower_ms"] <= r["latency_ms"] <= r["upper_ms"] for r in rows)


def test_unknown_space_is_refused(space_bundle, capsys):
    _, bundle, _budget = space_bundle
    argv = ["nas", "--bundle", str(bundle), "--budget-ms", "1", "--space", "fcnn"]
    code, _out, err = run_cli(argv, capsys)
    assert code == 2 and "fbnet" in err and "ofa" in err
