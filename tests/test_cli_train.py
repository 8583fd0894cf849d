"""`latlab train`, `evaluate` and `predict`: outputs, MLflow logging, one-line errors."""

from __future__ import annotations

import json
import shutil

import pytest

from cli_helpers import run_cli
from latlab.cli import main
from latlab.training.bundle import MANIFEST, SCHEMA_VERSION, load_bundle


@pytest.fixture(scope="module")
def cli_bundle(tmp_path_factory, fcnn_measured):
    """A flops bundle trained by the CLI on the measured FCNN table (without MLflow)."""
    out = tmp_path_factory.mktemp("cli") / "bundle"
    argv = [
        "train", "--data", str(fcnn_measured["csv"]), "--target", "cpu", "--predictor",
        "flops", "--train-size", "50", "--val-size", "10", "--conformal", "none",
        "--out", str(out), "--no-mlflow", "--json",
    ]  # fmt: skip
    try:
        main(argv)
    except SystemExit as exc:
        assert not exc.code
    return out


def test_train_json_and_files(cli_bundle, capsys):
    bundle = load_bundle(cli_bundle)
    assert bundle.manifest["split"]["train"] == 50 and bundle.manifest["split"]["test"] == 20
    assert len(bundle.split["train"]) == 50 and bundle.target == "cpu"


def test_evaluate_and_predict_json(cli_bundle, fcnn_measured, capsys):
    code, out, err = run_cli(
        ["evaluate", "--bundle", str(cli_bundle), "--data", str(fcnn_measured["csv"]),
         "--target", "cpu", "--json", "--no-mlflow"], capsys,
    )  # fmt: skip
    assert code == 0, err
    doc = json.loads(out)
    expected = {"n", "mae", "rmse", "mape", "rmspe", "acc1", "acc5", "acc10", "acc20"}
    assert expected | {"spearman", "kendall"} <= set(doc)
    assert doc["n"] == 80 and 0 <= doc["acc10"] <= 100 and doc["mape"] > 0
    assert "coverage" not in doc and list(doc["by_family"]) == ["fcnn"]
    assert "60 of the 80 networks" in err  # seen networks are flagged
    code, out, err = run_cli(
        ["predict", "--bundle", str(cli_bundle), "fcnn:8-16-4", "fcnn:30-30-30-2", "--json",
         "--no-mlflow"], capsys,
    )  # fmt: skip
    assert code == 0, err
    rows = json.loads(out)
    assert [r["network"] for r in rows] == ["fcnn:8-16-4", "fcnn:30-30-30-2"]
    assert all(r["latency_ms"] > 0 for r in rows)
    code, out, _ = run_cli(
        ["predict", "--bundle", str(cli_bundle), "fcnn:8-16-4", "--no-mlflow"], capsys
    )
    assert code == 0 and "fcnn:8-16-4" in out and "latency ms" in out


def test_train_from_a_store_logs_to_mlflow(tmp_path, fcnn_measured, mlflow_store, capsys):
    import mlflow

    out = tmp_path / "b"
    code, stdout, err = run_cli(
        ["train", "--data", fcnn_measured["url"], "--target", "cpu", "--predictor", "flops",
         "--conformal", "none", "--out", str(out), "--experiment", "cli-tests"], capsys,
    )  # fmt: skip
    assert code == 0, err
    assert "validation" in stdout and "MLflow run" in stdout
    manifest = load_bundle(out).manifest
    assert manifest["dataset"]["kind"] == "store" and manifest["device"]["fingerprint"]
    run = mlflow.MlflowClient(tracking_uri=mlflow_store).get_run(manifest["mlflow"]["run_id"])
    digest = manifest["device"]["fingerprint_digest"]
    assert run.data.tags["latlab.device_fingerprint"] == digest and len(digest) >= 8
    # Without --train-size every row is used for fitting, minus validation: no test split.
    assert manifest["split"]["test"] == 0 and manifest["split"]["val"] == 8


@pytest.fixture
def newer_bundle(cli_bundle, tmp_path):
    out = tmp_path / "newer"
    shutil.copytree(cli_bundle, out)
    doc = json.loads((out / MANIFEST).read_text())
    doc["schema_version"] = SCHEMA_VERSION + 1
    (out / MANIFEST).write_text(json.dumps(doc))
    return out


def _train(csv, out, *extra):
    return ["train", "--data", str(csv), "--target", "cpu", "--predictor", "flops",
            "--conformal", "none", "--out", str(out), "--no-mlflow", *extra]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing-column", "no latency column 'gpu'"),
        ("too-few-rows", "has 80 valid rows but the split needs 1000"),
        ("unknown-predictor", "unknown predictor 'magic'"),
        ("bad-confidence", "--confidence must be in (0, 1)"),
        ("unknown-param", "unknown parameter 'depth' for predictor 'flops'"),
        ("renamed-param", "parameter 'num_threads' of predictor 'fcnn' is now called 'n_jobs'"),
        ("renamed-param-tune", "parameter 'num_threads' of predictor 'gcn' is now called"),
        ("bad-split", "unknown --split 'diagonal'"),
        ("bad-conformal", "unknown conformal method 'magic'"),
        ("pretrain-not-transfer", "--pretrain applies to predictors that transfer"),
        ("tune-untunable", "no hyper-parameter space for predictor 'lxnorop'"),
        ("missing-table", "table file not found"),
    ],
)
def test_train_errors_are_one_line(case, message, fcnn_measured, tmp_path, capsys):
    csv = fcnn_measured["csv"]
    out = tmp_path / "b"
    argv = {
        "missing-column": [*_train(csv, out)[:4], "gpu", *_train(csv, out)[5:]],
        "too-few-rows": _train(csv, out, "--train-size", "900", "--val-size", "100"),
        "unknown-predictor": [*_train(csv, out)[:6], "magic", *_train(csv, out)[7:]],
        "bad-confidence": _train(csv, out, "--confidence", "1.2"),
        "unknown-param": _train(csv, out, "--param", "depth=3"),
        "renamed-param": [
            *_train(csv, out)[:6],
            "fcnn",
            *_train(csv, out)[7:],
            "--param",
            "num_threads=1",
        ],
        "renamed-param-tune": [
            *_train(csv, out)[:6],
            "gcn",
            *_train(csv, out)[7:],
            "--param",
            "num_threads=1",
            "--tune",
            "2",
        ],
        "bad-split": _train(csv, out, "--split", "diagonal"),
        "bad-conformal": [*_train(csv, out)[:8], "magic", *_train(csv, out)[9:]],
        "pretrain-not-transfer": _train(csv, out, "--pretrain", str(csv)),
        "tune-untunable": [*_train(csv, out)[:6], "lxnorop", *_train(csv, out)[7:], "--tune", "2"],
        "missing-table": _train(tmp_path / "nope.csv", out),
    }[case]
    code, _, err = run_cli(argv, capsys)
    assert code == 2
    assert message in err, err
    assert err.strip().count("\n") == 0 and "Traceback" not in err
    assert not out.exists()  # nothing half-written


def test_evaluate_and_predict_errors_are_one_line(newer_bundle, cli_bundle, fcnn_measured, capsys):
    csv = str(fcnn_measured["csv"])
    cases = [
        (["evaluate", "--bundle", str(newer_bundle), "--data", csv, "--target", "cpu"],
         f"schema version {SCHEMA_VERSION + 1}, newer"),
        (["predict", "--bundle", str(newer_bundle), "fcnn:4-4"],
         f"schema version {SCHEMA_VERSION + 1}, newer"),
        (["evaluate", "--bundle", str(cli_bundle), "--data", csv, "--target", "gpu"],
         "no latency column 'gpu'"),
        (["evaluate", "--bundle", str(cli_bundle), "--data", csv, "--target", "cpu",
          "--confidence", "0"], "--confidence must be in (0, 1)"),
        (["predict", "--bundle", str(cli_bundle), "fcnn:4-4", "--confidence", "1"],
         "--confidence must be in (0, 1)"),
        (["predict", "--bundle", str(cli_bundle), "fcnn:4-x"], "malformed reference"),
        (["predict", "--bundle", str(cli_bundle / "missing"), "fcnn:4-4"], "bundle not found"),
    ]  # fmt: skip
    for argv, message in cases:
        code, _, err = run_cli([*argv, "--no-mlflow"], capsys)
        assert code == 2, argv
        assert message in err, (argv, err)
        assert err.strip().count("\n") == 0, err


def test_pretrain_reaches_the_transfer_predictor_without_the_target(nb201_small, tmp_path, capsys):
    out = tmp_path / "t"
    code, stdout, err = run_cli(
        ["train", "--data", str(nb201_small), "--target", "gold_6240", "--predictor", "transfer",
         "--pretrain", str(nb201_small), "--train-size", "20", "--val-size", "0",
         "--conformal", "none", "--out", str(out), "--no-mlflow", "--json"], capsys,
    )  # fmt: skip
    assert code == 0, err
    doc = json.loads(stdout)
    assert doc["split"]["train"] == 20 and doc["split"]["test"] == 580
    # 20 shots and two source devices (titanx_32, pixel3) already rank the 580 others well.
    assert doc["metrics"]["test"]["spearman"] > 0.8
    bundle = load_bundle(out)
    assert bundle.manifest["pretrain"]["excluded"] == ["gold_6240"]
    assert bundle.manifest["pretrain"]["devices"] == ["titanx_32", "pixel3"]
    params = bundle.manifest["predictor"]["params"]
    assert params["pretrain"] == str(nb201_small) and params["target_exclude"] == "gold_6240"


def test_layerwise_predictor_trains_on_kernel_benchmarks(tmp_path, capsys):
    """A layer-wise model from real kernel benchmarks: the session probe stays in training."""
    from latlab.datasets.bench.campaign import run_bench
    from latlab.datasets.bench.export import training_table
    from latlab.datasets.bench.suites import SESSION_PROBE
    from latlab.datasets.measure import MeasureConfig
    from latlab.datasets.store import Store
    from latlab.datasets.tables import save_table

    refs = [SESSION_PROBE] + [
        f"kernel:conv?c={c}&h={h}&f=16&k=3" for c in (8, 16, 32) for h in (8, 14)
    ] + [f"kernel:fc?c={c}&f=10" for c in (64, 128, 256, 512)]  # fmt: skip
    fast = MeasureConfig(repeats=10, min_repeats=5, time_budget_s=0.05, max_warmup=10)
    store = Store(tmp_path / "bench.db")
    run_bench("kernels", store, "cpu", references=refs, config=fast, profile_runs=2)
    table = training_table(store, "cpu", method="single")
    store.close()
    csv = tmp_path / "kernels.csv"
    save_table(table, csv)
    out = tmp_path / "roof"
    code, stdout, err = run_cli(
        ["train", "--data", str(csv), "--target", "cpu", "--predictor", "roofline",
         "--val-size", "3", "--conformal", "none", "--param", "mapping=\"none\"",
         "--out", str(out), "--no-mlflow", "--json"], capsys,
    )  # fmt: skip
    assert code == 0, err
    bundle = load_bundle(out)
    assert SESSION_PROBE in bundle.split["train"] and len(bundle.split["val"]) == 3
    assert json.loads(stdout)["metrics"]["val"]["n"] == 3
