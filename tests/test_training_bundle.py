"""Bundles: round trip with identical predictions, safe loading, refusals, atomic writes."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

import latlab
from latlab.errors import BundleError, DataError
from latlab.predictors import make_predictor
from latlab.training.bundle import MANIFEST, SCHEMA_VERSION, load_bundle, save_bundle
from latlab.training.data import load_training_data
from latlab.training.pipeline import TrainConfig, evaluate, predict, train


@pytest.fixture(scope="module")
def nb201_flops_bundle(nb201_small, tmp_path_factory):
    """flops trained on 300 nb201 networks (titanx_32) by the pipeline, without MLflow."""
    out = tmp_path_factory.mktemp("bundles") / "flops"
    config = TrainConfig(predictor="flops", train_size=300, val_size=50, conformal=None, seed=1)
    result = train(nb201_small, "titanx_32", config, out)
    return out, result


def test_pipeline_bundle_reproduces_its_metrics(nb201_flops_bundle, nb201_small):
    out, result = nb201_flops_bundle
    assert result.split.sizes() == {"train": 300, "val": 50, "cal": 0, "test": 250}
    bundle = load_bundle(out)
    test_refs = bundle.split["test"]
    assert len(test_refs) == 250 and not set(test_refs) & bundle.trained_on()
    td = load_training_data(nb201_small, "titanx_32")
    lookup = dict(zip(td.networks, td.latency_ms, strict=True))
    from latlab.training.metrics import regression_metrics

    again = regression_metrics([lookup[r] for r in test_refs], bundle.predict(test_refs))
    assert again == pytest.approx(result.metrics["test"], rel=0, abs=0)
    m = bundle.manifest
    assert m["schema_version"] == SCHEMA_VERSION and m["predictor"]["name"] == "flops"
    assert m["dataset"]["hash"] == td.dataset_hash and m["dataset"]["rows"] == 600
    assert m["target"] == "titanx_32" and m["conformal"] is None
    assert "numpy" in m["environment"]["packages"] and m["environment"]["python"]
    own = {k for k in m["files"] if not k.startswith("mlflow_model/")}
    assert own == {"predictor/predictor.json", "split.json"}
    assert "mlflow_model/MLmodel" in m["files"]  # the MLflow model is checksummed too
    # nb201 networks form one family: the family breakdown has that one key.
    assert list(result.by_family) == ["nb201"]


def test_evaluate_counts_seen_networks(nb201_flops_bundle, nb201_small):
    out, _ = nb201_flops_bundle
    ev = evaluate(out, nb201_small, "titanx_32")
    assert ev.metrics["n"] == 600 and ev.n_seen == 350
    assert any("350 of the 600 networks" in w for w in ev.warnings)
    assert "coverage" not in ev.metrics  # an uncalibrated bundle has no intervals
    frame = predict(
        out,
        [
            "nb201:|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|"
            "skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
        ],
    )
    assert list(frame.columns) == ["network", "latency_ms"] and frame["latency_ms"][0] > 0
    with pytest.raises(BundleError, match="no conformal calibration"):
        load_bundle(out).predict_interval(["fcnn:4-4"], 0.9)
    with pytest.raises(DataError, match=r"\(0, 1\)"):
        predict(out, ["fcnn:4-4"], confidence=1.5)


def test_round_trip_is_exact_and_pickle_free(tmp_path, fcnn_measured, monkeypatch):
    td = load_training_data(fcnn_measured["csv"], "cpu")
    model = make_predictor("flops").fit(td.networks[:60], td.latency_ms[:60])
    before = model.predict(td.networks)
    out = save_bundle(tmp_path / "b", model, manifest={"target": "cpu"})

    def no_pickle(*args, **kwargs):
        raise AssertionError("a bundle must load without pickle")

    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    bundle = latlab.load_bundle(out)  # the lazy top-level export
    assert np.array_equal(bundle.predict(td.networks), before)
    assert bundle.target == "cpu" and not bundle.calibrated


def test_newer_schema_and_tampering_are_refused(tmp_path, fcnn_measured):
    td = load_training_data(fcnn_measured["csv"], "cpu")
    model = make_predictor("flops").fit(td.networks, td.latency_ms)
    out = save_bundle(tmp_path / "b", model)
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["schema_version"] = SCHEMA_VERSION + 1
    (out / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=f"schema version {SCHEMA_VERSION + 1}, newer"):
        load_bundle(out)
    out2 = save_bundle(tmp_path / "b2", model)
    doc = json.loads((out2 / "predictor" / "predictor.json").read_text())
    doc["state"]["intercept"] = 1.0
    (out2 / "predictor" / "predictor.json").write_text(json.dumps(doc))
    with pytest.raises(BundleError, match="does not match its checksum"):
        load_bundle(out2)
    with pytest.raises(BundleError, match="bundle not found"):
        load_bundle(tmp_path / "missing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(BundleError, match=r"no manifest\.json"):
        load_bundle(tmp_path / "plain")


def test_writes_are_atomic(tmp_path, fcnn_measured):
    td = load_training_data(fcnn_measured["csv"], "cpu")
    a = make_predictor("flops", use_bytes=False).fit(td.networks, td.latency_ms)
    b = make_predictor("flops", use_bytes=True).fit(td.networks, td.latency_ms)
    out = save_bundle(tmp_path / "b", a)
    save_bundle(out, b)  # an existing bundle is replaced
    assert load_bundle(out).manifest["predictor"]["params"] == {"use_bytes": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]  # no staging leftovers

    class Broken:
        name = "flops"

        def save(self, directory):
            directory.mkdir(parents=True)
            (directory / "half.bin").write_bytes(b"x")
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        save_bundle(out, Broken())
    assert load_bundle(out).manifest["predictor"]["params"] == {"use_bytes": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(BundleError, match="not a latlab bundle"):
        save_bundle(tmp_path / "other", a)
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


LEARNED = {
    "gbm": {"n_estimators": 60, "n_jobs": 1},
    "rf": {"n_estimators": 20, "n_jobs": 1},
    "fcnn": {"max_epochs": 5, "n_jobs": 1},
    "gcn": {"max_epochs": 3, "hidden": 32, "num_layers": 2, "n_jobs": 1},
}


@pytest.mark.parametrize("name", sorted(LEARNED))
def test_learned_bundles_reproduce_their_test_metrics(name, nb201_small, tmp_path):
    from latlab.training.metrics import regression_metrics

    config = TrainConfig(
        predictor=name, params=LEARNED[name], train_size=100, val_size=30, test_size=60,
        conformal=None,
    )  # fmt: skip
    result = train(nb201_small, "gold_6240", config, tmp_path / name)
    bundle = load_bundle(tmp_path / name)
    refs = bundle.split["test"]
    td = load_training_data(nb201_small, "gold_6240")
    lookup = dict(zip(td.networks, td.latency_ms, strict=True))
    again = regression_metrics([lookup[r] for r in refs], bundle.predict(refs))
    assert again == result.metrics["test"]  # bit-identical predictions after loading
    assert result.metrics["test"]["spearman"] > 0.5


def test_encoder_states_load_in_a_fresh_process():
    """A served bundle's process may import no encoder module before loading a saved state."""
    import subprocess
    import sys
    from pathlib import Path

    from latlab.encoders.vector import SummaryEncoder

    state = json.dumps(SummaryEncoder().to_state())
    code = (
        "import json, sys; from latlab.encoders.base import encoder_from_state; "
        "print(type(encoder_from_state(json.loads(sys.argv[1]))).__name__)"
    )
    src = Path(__file__).resolve().parents[1] / "src"
    out = subprocess.run(
        [sys.executable, "-c", code, state],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(src), "PATH": ""},
        check=True,
    )
    assert out.stdout.strip() == "SummaryEncoder"


def test_bundle_saved_with_num_threads_loads_as_n_jobs(tmp_path, fcnn_measured):
    """fcnn/gcn's thread count was ``num_threads`` before it became ``n_jobs``: a bundle saved
    then loads (the parameter migrated) and predicts exactly as before."""
    import hashlib

    from latlab.training.pipeline import build_predictor

    td = load_training_data(fcnn_measured["csv"], "cpu")
    model = make_predictor("fcnn", max_epochs=5, n_jobs=1).fit(td.networks, td.latency_ms)
    out = save_bundle(tmp_path / "b", model)
    expected = load_bundle(out).predict(td.networks)
    # Rewrite it as a bundle of before the rename (checksums updated: not a tampering test).
    path = out / "predictor" / "predictor.json"
    doc = json.loads(path.read_text())
    doc["params"]["num_threads"] = doc["params"].pop("n_jobs")
    path.write_text(json.dumps(doc))
    manifest = json.loads((out / MANIFEST).read_text())
    params = manifest["predictor"]["params"]
    params["num_threads"] = params.pop("n_jobs")
    manifest["files"]["predictor/predictor.json"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (out / MANIFEST).write_text(json.dumps(manifest))
    old = load_bundle(out)
    assert (
        old.predictor.get_params()["n_jobs"] == 1
        and "num_threads" not in old.predictor.get_params()
    )
    np.testing.assert_array_equal(old.predict(td.networks), expected)
    with pytest.raises(
        DataError, match=r"'num_threads' of predictor 'fcnn' is now called 'n_jobs'"
    ):
        build_predictor("fcnn", {"num_threads": 2}, seed=0)
    assert build_predictor("gcn", {"n_jobs": 2}, seed=0).get_params()["n_jobs"] == 2
