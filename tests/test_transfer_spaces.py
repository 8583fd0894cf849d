"""Cross-space transfer: the space-independent source models and the transfer-spaces protocol,
on the shared nb201 / FBNet / OFA tables (skipped where ../shared/data is absent)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from conftest import SHARED_DATA
from latlab.errors import DataError


def _table(space: str) -> pd.DataFrame:
    path = SHARED_DATA / f"{space}_latency.csv"
    if not path.exists():
        pytest.skip(f"shared data not found at {path}")
    return pd.read_csv(path)


@pytest.fixture(scope="module")
def small_tables(tmp_path_factory: pytest.TempPathFactory):
    """400 rows of each space table, side by side in one folder (as the experiment wants)."""
    folder = tmp_path_factory.mktemp("spaces")
    for space in ("nb201", "fbnet", "ofa"):
        _table(space).sample(400, random_state=1).to_csv(
            folder / f"{space}_latency.csv", index=False
        )
    return folder


def test_linear_extrapolates_to_networks_larger_than_it_saw(tmp_path):
    """Trained on the smaller half of FBNet networks (by MACs), ranked the larger half well;
    a tree model cannot rank beyond its training range at all."""
    from latlab.predictors import load_predictor, make_predictor
    from latlab.predictors.base import as_graphs

    t = _table("fbnet").sample(800, random_state=0)
    refs, y = list(t.network), t["gold_6240"].to_numpy()
    macs = np.array([g.totals.macs for g in as_graphs(refs)])
    small, large = macs <= np.median(macs), macs > np.median(macs)
    arr = np.array(refs)
    model = make_predictor("linear").fit(list(arr[small]), y[small])
    pred = model.predict(list(arr[large]))
    rho = spearmanr(pred, y[large])[0]
    assert rho > 0.6, rho
    # Larger networks are predicted slower than the training ones on average (extrapolation).
    assert np.median(pred) > np.median(y[small])
    model.save(tmp_path / "m")
    again = load_predictor(tmp_path / "m")
    np.testing.assert_allclose(again.predict(refs[:20]), model.predict(refs[:20]), rtol=1e-12)


def test_transfer_auto_source_models_are_linear_across_spaces(small_tables, tmp_path):
    from latlab.predictors import load_predictor, make_predictor

    ofa = pd.read_csv(small_tables / "ofa_latency.csv")
    refs, y = list(ofa.network), ofa["titan_xp_32"].to_numpy()
    model = make_predictor("transfer", pretrain=str(small_tables / "fbnet_latency.csv"))
    model.fit(refs[:10], y[:10])
    assert model.source_predictor_ == "linear"
    pred = model.predict(refs[10:])
    assert spearmanr(pred, y[10:])[0] > 0.9  # 0.99 on the full table (quick report)
    assert np.mean(np.abs(pred - y[10:]) / y[10:]) < 0.15
    model.save(tmp_path / "b")
    again = load_predictor(tmp_path / "b")
    assert again.source_predictor_ == "linear"
    np.testing.assert_allclose(again.predict(refs[10:30]), pred[:20], rtol=1e-9)
    # In-space (the target networks are rows of the pretrain table): gbm, never built here.
    fb = pd.read_csv(small_tables / "fbnet_latency.csv")
    inside = make_predictor(
        "transfer", pretrain=str(small_tables / "fbnet_latency.csv"), target_exclude="pixel3"
    ).fit(list(fb.network[:10]), fb["pixel3"].to_numpy()[:10])
    assert inside.source_predictor_ == "gbm" and not inside.source_models_


def test_transfer_spaces_quick_reports_every_direction_and_resumes(small_tables, tmp_path):
    from latlab.experiments.runner import run_experiment

    out = tmp_path / "r"
    data = small_tables / "ofa_latency.csv"
    res = run_experiment("transfer-spaces", out=out, quick=True, data=data)
    m = res.metrics
    assert set(m["directions"]) == {"nb201>ofa", "fbnet>ofa", "ofa>nb201", "ofa>fbnet"}
    fb_ofa = m["directions"]["fbnet>ofa"]["devices"]["titan_xp_32"]
    assert fb_ofa["transfer"]["spearman"]["n"] == 2
    assert fb_ofa["transfer"]["spearman"]["mean"] > 0.9
    assert m["directions"]["ofa>nb201"]["kinds"].keys() == {"cpu", "gpu", "phone"}
    text = (out / "report.md").read_text()
    assert "fbnet → ofa" in text and "top source" in text
    lines = (out / "runs.jsonl").read_text().splitlines()
    assert len(lines) == 4 * 3 * 2 * 3
    assert {json.loads(x)["source_predictor"] for x in lines if '"model": "transfer"' in x} == {
        "linear"
    }
    run_experiment("transfer-spaces", out=out, quick=True, data=data)
    assert len((out / "runs.jsonl").read_text().splitlines()) == len(lines)  # nothing refitted


def test_transfer_spaces_names_a_missing_table(tmp_path):
    from latlab.experiments.runner import run_experiment

    lone = tmp_path / "ofa_latency.csv"
    lone.write_text("network,a\nofa:x,1\n")
    with pytest.raises(DataError, match=r"needs nb201_latency\.csv beside"):
        run_experiment("transfer-spaces", out=tmp_path / "o", quick=True, data=lone)
    assert not (tmp_path / "o" / "report.md").exists()


def test_cli_trains_a_cross_space_k10_bundle_with_intervals(small_tables, tmp_path, capsys):
    """`latlab train` on 10 OFA rows with an FBNet pretrain table: cross-space source models,
    CV+ intervals by default, and `predict` on OFA networks outside both tables' rows."""
    from cli_helpers import run_cli
    from latlab.training.bundle import load_bundle

    ofa = pd.read_csv(small_tables / "ofa_latency.csv")
    k10 = tmp_path / "K10.csv"
    ofa[["network", "titan_xp_32"]].head(10).to_csv(k10, index=False)
    out = tmp_path / "B"
    argv = ["train", "--data", str(k10), "--target", "titan_xp_32", "--predictor", "transfer"]
    argv += ["--pretrain", str(small_tables / "fbnet_latency.csv"), "--out", str(out)]
    code, _stdout, err = run_cli([*argv, "--no-mlflow"], capsys)
    assert code == 0, err
    b = load_bundle(out)
    assert b.calibrated and b.manifest["conformal"]["method"] == "cv+"
    refs, y = list(ofa.network[10:]), ofa["titan_xp_32"].to_numpy()[10:]
    low, high = b.predict_interval(refs)
    point = b.predict(refs)
    assert np.all(np.isfinite(high)) and np.all((low <= point) & (point <= high))
    assert spearmanr(point, y)[0] > 0.9
    assert 0.7 <= float(np.mean((y >= low) & (y <= high))) <= 1.0
