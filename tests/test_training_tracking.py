"""MLflow tracking on a real store: runs, nested trials, datasets, plots, the pyfunc model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from latlab.training.bundle import load_bundle
from latlab.training.pipeline import TrainConfig, evaluate, predict, train
from latlab.training.tracking import Tracker, tracking_uri


@pytest.fixture(scope="module")
def tracked_training(mlflow_store, nb201_small, tmp_path_factory):
    """flops trained with 2 tuning trials, logged to the temporary MLflow store."""
    d = tmp_path_factory.mktemp("tracked")
    config = TrainConfig(
        predictor="flops",
        train_size=200,
        val_size=50,
        conformal=None,
        tune=2,
        storage=f"sqlite:///{d / 'optuna.db'}",
    )
    tracker = Tracker(experiment="latlab-tests")
    result = train(nb201_small, "titanx_32", config, d / "bundle", tracker=tracker)
    return result, d / "bundle"


def test_train_run_has_params_metrics_dataset_trials_and_plots(tracked_training, mlflow_store):
    import mlflow

    result, out = tracked_training
    client = mlflow.MlflowClient(tracking_uri=mlflow_store)
    run = client.get_run(result.run_id)
    params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
    assert params["predictor"] == "flops" and params["target"] == "titanx_32"
    assert params["dataset_hash"] == load_bundle(out).manifest["dataset"]["hash"]
    assert params["dataset_rows"] == "600" and params["split.train"] == "200"
    assert metrics["test.mape"] == pytest.approx(result.metrics["test"]["mape"])
    assert metrics["val.acc10"] == pytest.approx(result.metrics["val"]["acc10"])
    assert "tune_val_mape" in metrics and "default_val_mape" in metrics
    assert tags["latlab.device"] == "titanx_32" and tags["latlab.machine"]
    inputs = run.inputs.dataset_inputs
    assert len(inputs) == 1 and inputs[0].dataset.digest
    assert inputs[0].tags[0].value == "training"
    children = client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'"
    )
    names = sorted(c.info.run_name for c in children)
    assert names[0] == "defaults" and len(names) == 3  # the defaults + 2 tuned trials
    assert all("val_mape" in c.data.metrics for c in children)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert "plots/test_predicted_vs_measured.png" in artifacts
    assert "plots/test_relative_error_hist.png" in artifacts
    bundle_files = {a.path for a in client.list_artifacts(run.info.run_id, "bundle")}
    assert "bundle/manifest.json" in bundle_files
    assert load_bundle(out).manifest["mlflow"]["run_id"] == result.run_id


def test_pyfunc_model_answers_like_the_bundle(tracked_training, mlflow_store):
    import mlflow

    result, out = tracked_training
    mlflow.set_tracking_uri(mlflow_store)
    model = mlflow.pyfunc.load_model(result.model_uri)
    refs = load_bundle(out).split["test"][:20]
    frame = model.predict(pd.DataFrame({"network": refs}))
    assert list(frame["network"]) == refs
    assert np.array_equal(frame["latency_ms"].to_numpy(), load_bundle(out).predict(refs))
    sig = model.metadata.signature
    assert sig.inputs.input_names() == ["network"]
    assert sig.params.to_dict()[0]["name"] == "confidence"


def test_evaluate_and_predict_are_logged(tracked_training, mlflow_store, nb201_small):
    import mlflow

    _, out = tracked_training
    tracker = Tracker(experiment="latlab-tests")
    ev = evaluate(out, nb201_small, "titanx_32", tracker=tracker)
    client = mlflow.MlflowClient(tracking_uri=mlflow_store)
    run = client.get_run(ev.run_id)
    assert run.data.metrics["mape"] == pytest.approx(ev.metrics["mape"])
    assert run.data.metrics["family.nb201.n"] == 600
    assert run.data.tags["latlab.command"] == "evaluate"
    assert run.inputs.dataset_inputs[0].tags[0].value == "evaluation"
    tracker = Tracker(experiment="latlab-tests")
    predict(out, ["fcnn:8-16-4"], tracker=tracker)
    run = client.get_run(tracker.run_id)
    assert run.data.params["networks"] == "1"
    assert "predictions.json" in {a.path for a in client.list_artifacts(tracker.run_id)}


def test_default_tracking_uri_is_an_absolute_sqlite_file(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert tracking_uri() == f"sqlite:///{(tmp_path / 'mlflow.db').resolve()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////x/y.db")
    assert tracking_uri() == "sqlite:////x/y.db"
    assert Path(tracking_uri()[len("sqlite:///") :]).is_absolute()


def test_pyfunc_model_refuses_bad_input_as_a_client_error(tracked_training, mlflow_store):
    import mlflow
    from mlflow.exceptions import MlflowException

    result, _ = tracked_training
    mlflow.set_tracking_uri(mlflow_store)
    model = mlflow.pyfunc.load_model(result.model_uri)
    with pytest.raises(MlflowException, match="malformed reference 'fcnn:8-x'") as exc:
        model.predict(pd.DataFrame({"network": ["fcnn:8-x"]}))
    assert exc.value.get_http_status_code() == 400


def _open_run(uri: str, queue) -> None:  # a spawned worker: module-level to be picklable
    try:
        with Tracker(uri=uri, experiment="parallel-workers").run("worker"):
            pass
        queue.put("ok")
    except Exception as exc:  # reported to the parent, which asserts on it
        queue.put(f"{type(exc).__name__}: {exc}")


@pytest.mark.slow
def test_parallel_workers_can_start_on_a_fresh_sqlite_store(tmp_path):
    """Four processes opening one new mlflow.db at once (parallel tuning workers): without the
    first-use lock, MLflow's table creation raced and most of them failed."""
    import multiprocessing

    import mlflow

    ctx = multiprocessing.get_context("spawn")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    queue = ctx.Queue()
    workers = [ctx.Process(target=_open_run, args=(uri, queue)) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=240)
    assert [queue.get(timeout=5) for _ in workers] == ["ok"] * 4
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("parallel-workers")
    assert len(client.search_runs([exp.experiment_id])) == 4


def test_a_new_store_does_not_print_mlflow_setup_chatter(tmp_path, capfd):
    """MLflow announces new tables and experiments at INFO amid latlab's output; only the
    tracker's setup is quietened (MLflow's own logger levels are restored afterwards)."""
    import logging

    before = logging.getLogger("mlflow.store.db.utils").level
    with Tracker(uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="quiet").run("r"):
        pass
    err = capfd.readouterr().err
    assert "Creating initial MLflow database tables" not in err
    assert "does not exist. Creating a new experiment" not in err
    assert logging.getLogger("mlflow.store.db.utils").level == before
    assert (tmp_path / "mlflow.db").stat().st_size > 0
