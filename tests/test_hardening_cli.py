"""No late or half-done failures (issue 13): outputs and references are checked before any
work, failed commands leave nothing behind, unreachable servers fail in seconds, and the
CLI's messages name the flag."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from cli_helpers import run_cli


def run(capsys, *argv: str) -> tuple[int, str, str]:
    return run_cli(list(argv), capsys)


def one_line(err: str) -> str:
    lines = [x for x in err.strip().splitlines() if x.strip()]
    assert len(lines) == 1, err
    return lines[0]


def test_train_checks_out_before_loading_anything(capsys, tmp_path, fcnn_measured):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    # The data does not exist either: the output is what is checked first, in one line.
    code, _, err = run(capsys, "train", "--data", str(tmp_path / "missing.csv"), "--target",
                       "cpu", "--predictor", "flops", "--out", str(blocker / "b"),
                       "--no-mlflow")  # fmt: skip
    assert code == 2 and "--out" in one_line(err) and "is a file, not a folder" in err
    # a missing parent folder is created, as other tools do (it was "no folder bundles")
    out = tmp_path / "bundles" / "nested" / "flops"
    code, _, err = run(capsys, "train", "--data", str(fcnn_measured["csv"]), "--target", "cpu",
                       "--predictor", "flops", "--train-size", "40", "--val-size", "10",
                       "--conformal", "none", "--out", str(out), "--no-mlflow")  # fmt: skip
    assert code == 0, err
    assert (out / "manifest.json").is_file()


def test_train_param_refused_by_the_model_library_is_one_line(capsys, tmp_path, fcnn_measured):
    base = ["train", "--data", str(fcnn_measured["csv"]), "--target", "cpu", "--predictor",
            "gbm", "--train-size", "40", "--val-size", "10", "--conformal", "none",
            "--no-mlflow", "--out", str(tmp_path / "a" / "b")]  # fmt: skip
    code, _, err = run(capsys, *base, "--param", "n_estimators=-7")
    assert code == 2 and "--param n_estimators=-7" in one_line(err)
    code, _, err = run(capsys, *base, "--param", "n_estimators=0")
    line = one_line(err)
    assert code == 2 and "n_estimators=0" in line and "boosting rounds" in line
    assert not (tmp_path / "a").exists()  # nothing created for a failed command


def test_measure_validates_every_reference_before_the_store(capsys, tmp_path):
    db = tmp_path / "store.db"
    code, _, err = run(capsys, "measure", "fcnn:4-8-2", "onnx:" + str(tmp_path / "nope.onnx"),
                       "--db", str(db), "--no-anchor")  # fmt: skip
    assert code == 2 and "nope.onnx" in one_line(err)
    assert not db.exists()  # no store, no device row, no anchor, no measured good network
    code, _, err = run(capsys, "measure", "fcnn:4-8-2", "--db", str(db), "--anchor",
                       "fcnn:0-1")  # fmt: skip
    assert code == 2 and not db.exists()


def test_table_outputs_create_missing_folders_consistently(capsys, tmp_path):
    out = tmp_path / "new" / "dir" / "t.csv"
    code, _, err = run(capsys, "measure", "fcnn:4-8-2", "--db", str(tmp_path / "s.db"),
                       "--no-anchor", "--repeats", "3", "--time-budget", "0.01", "--out",
                       str(out))  # fmt: skip
    assert code == 0, err
    from latlab.fileio import file_mode

    assert out.is_file() and (out.stat().st_mode & 0o777) == file_mode()  # like bundles, not 0600
    blocker = tmp_path / "f"
    blocker.write_text("x")
    for argv in (
        ["measure", "fcnn:4-8-2", "--db", str(tmp_path / "s.db"), "--out", str(blocker / "t.csv")],
        ["bench", "--export", str(blocker / "t.csv"), "--db", str(tmp_path / "s.db")],
        ["bnn", "calibrate", "--quick", "--out", str(blocker / "t.json")],
    ):
        code, _, err = run(capsys, *argv)
        assert code == 2 and "is a file, not a folder" in one_line(err), argv
    # bnn calibrate: same rule as the others (checked first; folders made only on writing)
    code, _, err = run(capsys, "bnn", "calibrate", "--out", str(tmp_path / "x" / "y" / "t.json"),
                       "--clock", "sundial")  # fmt: skip
    assert code == 2 and "sundial" in err and not (tmp_path / "x").exists()


def test_experiment_run_on_an_empty_table_leaves_no_folder(capsys, tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    out = tmp_path / "reports" / "brp"
    code, _, err = run(capsys, "experiment", "run", "brp-nas", "--quick", "--data", str(empty),
                       "--out", str(out), "--no-mlflow")  # fmt: skip
    assert code == 2 and "empty" in one_line(err)
    assert not out.exists() and not (tmp_path / "reports").exists()


def test_unreachable_tracking_server_fails_in_seconds(capsys, tmp_path, monkeypatch):
    from latlab.errors import TrackingError
    from latlab.training.tracking import Tracker

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # discard port: closed
    t0 = time.monotonic()
    with pytest.raises(TrackingError, match=r"tried 127\.0\.0\.1:9") as err, Tracker().run("x"):
        pass
    assert time.monotonic() - t0 < 10
    assert "--no-mlflow" in str(err.value)


def test_nas_rejects_bad_top_and_absurd_cycles(capsys, fcnn_gbm_bundle):
    for flag, value, text in (("--top", "0", "--top"), ("--top", "-1", "--top"),
                              ("--cycles", "100000000", "--cycles")):  # fmt: skip
        t0 = time.monotonic()
        code, _, err = run(capsys, "nas", "--bundle", str(fcnn_gbm_bundle), "--budget-ms", "5",
                           flag, value)  # fmt: skip
        assert code == 2 and text in one_line(err) and "no network found" not in err
        assert time.monotonic() - t0 < 30


@pytest.fixture(scope="module")
def nb201_flops_bundle(tmp_path_factory) -> Path:
    """flops fitted on 12 nb201 networks measured here (short protocol), point predictions."""
    from latlab.datasets.measure import MeasureConfig
    from latlab.datasets.measure.protocol import measure_many
    from latlab.datasets.spaces import sample
    from latlab.datasets.store import Store
    from latlab.predictors import make_predictor
    from latlab.training.bundle import save_bundle

    d = tmp_path_factory.mktemp("nas")
    refs = sample("nb201", 12, seed=3)
    store = Store(d / "s.db")
    config = MeasureConfig(repeats=5, min_repeats=3, time_budget_s=0.02, max_warmup=5)
    measure_many(refs, config, store, "cpu", anchor=None)
    table = store.export_table(devices=["cpu"])
    store.close()
    model = make_predictor("flops").fit(list(table["network"]), table["cpu"].to_numpy())
    return save_bundle(d / "b", model, mlflow_model=False)


def test_nas_prints_progress_lines_when_not_on_a_terminal(capsys, nb201_flops_bundle):
    code, _, err = run(capsys, "nas", "--bundle", str(nb201_flops_bundle), "--budget-ms", "1e6",
                       "--cycles", "300", "--population", "20", "--point")  # fmt: skip
    assert code == 0, err
    lines = [x for x in err.splitlines() if x.startswith("nas: ")]
    assert len(lines) >= 5 and lines[-1].endswith("/320 evaluated")


def test_compare_default_output_is_outside_the_committed_reports():
    from latlab.cli import DEFAULT_COMPARE_OUT

    assert Path(DEFAULT_COMPARE_OUT).parts[0] != "reports"
    root = Path(__file__).resolve().parents[1]
    assert "/latlab-runs/" in (root / ".gitignore").read_text()
    assert json.dumps(DEFAULT_COMPARE_OUT)


def test_tables_printed_to_a_pipe_keep_their_full_width(tmp_path):
    import os
    import subprocess
    import sys

    folder = tmp_path / ("a-rather-long-folder-name-" * 4)
    folder.mkdir()
    table = folder / "latencies.csv"
    table.write_text("network,device_with_a_long_name,another_device_column\nfcnn:4-4,1.0,2.0\n")
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    res = subprocess.run(
        [sys.executable, "-m", "latlab.cli", "table", str(table)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert str(table) in res.stdout  # the path is not folded at 80 columns
    header = next(line for line in res.stdout.splitlines() if "column" in line and "rows" in line)
    assert "conflicts" in header and "quantised" in header and len(header) > 80


def test_tracked_runs_leave_no_mlruns_in_the_working_directory(tmp_path, monkeypatch):
    from latlab.training.tracking import Tracker

    work = tmp_path / "checkout"
    work.mkdir()
    monkeypatch.chdir(work)
    store = tmp_path / "store"
    store.mkdir()
    import os

    before = os.environ.get("MLFLOW_TRACKING_URI")
    tracker = Tracker(uri=f"sqlite:///{store / 'mlflow.db'}", experiment="no-mlruns")
    with tracker.run("x"):
        tracker.log_table(__import__("pandas").DataFrame({"a": [1]}), "t.json")
    assert not (work / "mlruns").exists() and list(work.iterdir()) == []
    assert (store / "mlruns").is_dir()
    # an explicit uri does not become the process's default (MLflow writes it into the env)
    assert os.environ.get("MLFLOW_TRACKING_URI") == before
