"""``latlab experiment``: the registry, one-line errors, a tiny real run, MLflow, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from latlab.cli import main
from latlab.errors import DataError
from latlab.experiments.registry import EXPERIMENTS, get_experiment
from latlab.experiments.runner import flat_metrics, run_experiment

REGISTERED = {
    "annette",
    "brp-nas",
    "fcnn",
    "conformal",
    "bnn",
    "transfer",
    "transfer-kinds",
    "transfer-spaces",
    "precision",
    "coverage-budget",
    "cps-networks",
}


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


@pytest.fixture(scope="module")
def tiny_table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small real nb201 latency table: 240 rows of the shared one, else measured here."""
    d = tmp_path_factory.mktemp("nb201")
    path = d / "nb201_tiny.csv"
    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "nb201_latency.csv"
    if shared.exists():
        frame = pd.read_csv(shared, usecols=["network", "1080ti_1"]).sample(240, random_state=0)
        frame.to_csv(path, index=False)
        return path
    from latlab.datasets.measure import MeasureConfig, measure_many
    from latlab.datasets.spaces import sample
    from latlab.datasets.store import Store

    refs = sample("nb201", 40, seed=0)
    cfg = MeasureConfig(repeats=10, time_budget_s=0.05, max_warmup_s=0.05)
    store = Store(d / "m.db")
    try:
        measure_many(refs, cfg, store, "cpu")
        frame = store.measurements(["cpu"], cfg.protocol_key())
    finally:
        store.close()
    frame[["network", "median_ms"]].rename(columns={"median_ms": "cpu"}).to_csv(path, index=False)
    return path


def test_registry_names_every_experiment_lazily():
    assert set(EXPERIMENTS) == REGISTERED
    for e in EXPERIMENTS.values():
        module, sep, func = e.target.partition(":")
        assert sep and module.startswith("latlab.experiments.") and func == "experiment"
        assert e.full_duration and e.quick_duration
    assert {n for n, e in EXPERIMENTS.items() if e.needs_data} == {
        "brp-nas",
        "conformal",
        "transfer",
        "transfer-kinds",
        "transfer-spaces",
        "coverage-budget",
    }
    with pytest.raises(DataError, match="unknown experiment 'nope' \\(known: annette, brp-nas"):
        get_experiment("nope")


def test_cli_errors_are_one_line(tmp_path, capsys):
    code, _, err = _cli(["experiment", "run", "nope", "--no-mlflow"], capsys)
    assert code == 2 and "unknown experiment 'nope'" in err and "bnn" in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = _cli(["experiment", "run", "brp-nas", "--out", str(tmp_path / "r")], capsys)
    assert code == 2
    assert "brp-nas needs the NAS-Bench-201 latency table: pass --data PATH" in err
    assert not (tmp_path / "r").exists()  # nothing written before the check
    code, _, err = _cli(
        ["experiment", "run", "transfer", "--data", str(tmp_path / "missing.csv")], capsys
    )
    assert code == 2 and "missing.csv: no such file" in err
    code, _, err = _cli(["experiment", "run", "conformal", "--data", str(tmp_path)], capsys)
    assert code == 2 and "is a directory" in err
    code, _, err = _cli(["experiment", "run", "bnn", "--report-only", "--no-mlflow"], capsys)
    assert code == 2 and "no --report-only mode" in err


def test_cli_list(capsys):
    code, out, _ = _cli(["experiment", "list"], capsys)
    assert code == 0
    for name in REGISTERED:
        assert name in out


def test_flat_metrics_keeps_finite_numbers_only():
    flat = flat_metrics({"a": {"b": 1, "c": float("nan"), "d": [1, 2]}, "ok": True, "s": "x"})
    assert flat == {"a.b": 1.0, "ok": 1.0}
    assert flat_metrics({"±10 %": 3.0}) == {"_10 _": 3.0}


def test_brpnas_tiny_run_report_mlflow_and_resume(tiny_table, tmp_path, monkeypatch, mlflow_store):
    from latlab.experiments import brpnas
    from latlab.training.tracking import Tracker

    # Two cheap predictors (the full list is what --quick runs; GCN/FCNN take minutes).
    monkeypatch.setattr(
        brpnas, "PREDICTORS", {k: brpnas.PREDICTORS[k] for k in ("flops", "gbm", "layer-sum")}
    )
    monkeypatch.setattr(brpnas, "QUICK_OVERRIDES", {"gbm": {"n_estimators": 100}})
    # The shared test store (MLFLOW_TRACKING_URI): one MLflow store per session, as mlflow
    # keeps process-wide state (tracking URI, active experiment) between tests.
    uri = mlflow_store
    out = tmp_path / "report"
    res = run_experiment(
        "brp-nas",
        out=out,
        quick=True,
        data=tiny_table,
        tracker=Tracker(experiment="latlab-experiment-test"),
    )
    n = len(pd.read_csv(tiny_table).dropna())
    assert (out / "report.md").exists() and (out / "acc10.png").stat().st_size > 1000
    assert (out / "predicted_vs_measured.png").exists()
    doc = json.loads((out / "metrics.json").read_text())
    device = next(iter(doc["results"]))
    cell = doc["results"][device]
    assert set(cell) == {"flops", "gbm", "layer-sum"}
    # Proportional split on a small table: 60 % / 10 % / the rest.
    assert doc["config"]["n_train"] == int(0.6 * n)
    assert cell["gbm"]["test"]["n"]["mean"] == n - int(0.6 * n) - max(int(0.1 * n), 2)
    for p in cell.values():
        acc1, acc10 = p["test"]["acc1"]["mean"], p["test"]["acc10"]["mean"]
        assert 0 <= acc1 <= acc10 <= 100
        assert -1 <= p["test"]["spearman"]["mean"] <= 1
    assert cell["layer-sum"]["test"]["spearman"]["mean"] > 0.3  # a real, if rough, model
    report = (out / "report.md").read_text()
    assert "## ±10 % accuracy (%)" in report and "acc10.png" in report and "How to repeat" in report
    assert res.summary and res.run_id

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    run = client.get_run(res.run_id)
    assert run.data.params["experiment"] == "brp-nas" and run.data.params["quick"] == "True"
    key = f"results.{device}.gbm.test.acc10.mean"
    assert run.data.metrics[key] == pytest.approx(cell["gbm"]["test"]["acc10"]["mean"])
    arts = {a.path for a in client.list_artifacts(res.run_id, "report")}
    assert {"report/report.md", "report/metrics.json", "report/acc10.png"} <= arts

    # Resume: a second run fits nothing new and reports the same figures.
    lines = (out / "runs.jsonl").read_text().splitlines()
    again = run_experiment("brp-nas", out=out, quick=True, data=tiny_table)
    assert (out / "runs.jsonl").read_text().splitlines() == lines
    assert again.metrics["results"] == doc["results"]

    # --report-only with more seeds than finished: cells are marked, nothing is fitted.
    monkeypatch.setattr(brpnas.BrpnasConfig, "quick_config", _two_seed_quick(brpnas))
    only = run_experiment("brp-nas", out=out, quick=True, data=tiny_table, report_only=True)
    assert (out / "runs.jsonl").read_text().splitlines() == lines
    assert "(n=1 seeds)" in (out / "report.md").read_text()
    assert only.metrics["results"][device]["gbm"]["seeds"] == 1


def _two_seed_quick(brpnas):
    original = brpnas.BrpnasConfig.quick_config.__func__

    def quick_config(cls, data, out, **kw):
        cfg = original(cls, data, out, **kw)
        cfg.seeds = 2
        return cfg

    return classmethod(quick_config)


@pytest.mark.parametrize("layers", ["ir", "auto"])
def test_layer_sum_is_a_non_negative_lookup_table(tiny_table, tmp_path, layers):
    from latlab.predictors import load_predictor, make_predictor
    from latlab.predictors.layersum import layer_counts

    frame = pd.read_csv(tiny_table).dropna()
    refs, y = frame["network"].tolist(), frame.iloc[:, 1].to_numpy()
    model = make_predictor("layer-sum", layers=layers).fit(refs[:30], y[:30])
    assert model.kind_ == ("ir" if layers == "ir" else "nb201-ops")
    table = model.table()
    assert all(v >= 0 for v in table.values())
    # ir: one entry per distinct layer of the built graph; nb201-ops: per op, all + live edges.
    assert len(table) > 10 if layers == "ir" else "count=nor_conv_3x3" in table
    pred = model.predict(refs)
    assert np.all(pred > 0)
    # A sum model: each prediction is the count-weighted sum of the table entries.
    counts = layer_counts(refs[:1], model.kind_)[0]
    expect = sum(table.get(k, 0.0) * c for k, c in counts.items()) + table["overhead"]
    assert pred[0] == pytest.approx(expect)
    assert np.median(np.abs(pred[:30] - y[:30]) / y[:30]) < 0.5
    model.save(tmp_path / "ls")
    np.testing.assert_allclose(load_predictor(tmp_path / "ls").predict(refs), pred)


def test_layer_sum_nb201_ops_counts_dead_ops():
    from latlab.predictors.layersum import layer_counts

    # The conv on edge 1->... is dead (node 3 reads node 0 only): the built graph drops it,
    # the nb201-ops table still counts it (devices that run every op pay for it).
    dead_conv = "nb201:|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|"
    dead_pool = "nb201:|avg_pool_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|"
    ops = layer_counts([dead_conv, dead_pool], "nb201-ops")
    assert ops[0]["count=nor_conv_3x3"] == 1 and "live_count=nor_conv_3x3" not in ops[0]
    assert ops[0] != ops[1]
    ir = layer_counts([dead_conv, dead_pool], "ir")
    assert ir[0] == ir[1]
