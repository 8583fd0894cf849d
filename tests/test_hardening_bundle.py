"""Bundles read nothing outside their folder, every file they open is checksummed, and the
served model reads no server file a client names (issue 13, security)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from latlab.errors import BundleError, NetworkReferenceError
from latlab.training.bundle import (
    MANIFEST,
    clean_stale_staging,
    load_bundle,
    save_bundle,
    verify_mlflow_model,
)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def bundle(tmp_path: Path, fcnn_gbm_bundle: Path) -> Path:
    """A private copy of the session's calibrated LightGBM bundle (with its mlflow_model)."""
    out = tmp_path / "bundle"
    shutil.copytree(fcnn_gbm_bundle, out, symlinks=True)
    return out


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """A file outside the bundle that a tampered manifest points at."""
    path = tmp_path / "outside" / "secret.txt"
    path.parent.mkdir()
    path.write_text("not for bundles\n")
    return path


def _manifest(b: Path) -> dict:
    return json.loads((b / MANIFEST).read_text())


def _write_manifest(b: Path, doc: dict) -> None:
    (b / MANIFEST).write_text(json.dumps(doc))


def verify_files_of(b: Path) -> None:
    from latlab.training.bundle import read_manifest, verify_files

    doc = read_manifest(b)
    doc["files"].pop(_booster_rel(b))
    verify_files(b, doc)


def _booster_rel(b: Path) -> str:
    return next(k for k in _manifest(b)["files"] if k.endswith("booster.txt"))


def test_listed_file_outside_the_bundle_is_refused_without_a_hash_oracle(bundle, secret):
    doc = _manifest(bundle)
    rel = os.path.relpath(secret, bundle)
    assert rel.startswith("..")
    doc["files"][rel] = _sha(secret)  # the right hash: before, this loaded
    _write_manifest(bundle, doc)
    with pytest.raises(BundleError, match="points outside its folder") as err:
        load_bundle(bundle)
    assert _sha(secret) not in str(err.value)
    doc["files"] = {**doc["files"], rel: "0" * 64}
    del doc["files"][rel]
    doc["files"][str(secret)] = "0" * 64  # absolute, wrong hash: no "does not match" oracle
    _write_manifest(bundle, doc)
    with pytest.raises(BundleError, match="points outside its folder") as err:
        load_bundle(bundle)
    assert "checksum" not in str(err.value)


def test_model_file_naming_a_file_outside_is_refused(bundle, tmp_path):
    # The attacker rewrites predictor.json to read a booster outside the bundle, and fixes
    # the manifest's checksum of predictor.json so the integrity check passes.
    rel = _booster_rel(bundle)
    outside = tmp_path / "stolen-booster.txt"
    shutil.copy(bundle / rel, outside)
    pj = bundle / Path(rel).parent / "predictor.json"
    state = json.loads(pj.read_text())
    state["state"]["model_file"] = os.path.relpath(outside, pj.parent)
    pj.write_text(json.dumps(state))
    (bundle / rel).unlink()
    doc = _manifest(bundle)
    del doc["files"][rel]
    doc["files"][pj.relative_to(bundle).as_posix()] = _sha(pj)
    _write_manifest(bundle, doc)
    with pytest.raises(BundleError, match=r"model file '\.\./.*' points outside its folder"):
        load_bundle(bundle)
    with pytest.raises(BundleError, match="points outside its folder"):
        load_bundle(bundle, verify=False)  # the opt-out skips digests, never containment


def test_booster_symlink_leaving_the_bundle_is_refused(bundle, tmp_path):
    rel = _booster_rel(bundle)
    outside = tmp_path / "booster-elsewhere.txt"
    shutil.copy(bundle / rel, outside)
    (bundle / rel).unlink()
    (bundle / rel).symlink_to(outside)  # same content, same hash: it used to load
    with pytest.raises(BundleError, match="points outside its folder"):
        load_bundle(bundle)
    inner = bundle / Path(rel).parent / "copy.txt"
    inner.symlink_to(bundle / MANIFEST)  # a link, even one inside, is not a bundle file
    with pytest.raises(BundleError, match="symbolic link"):
        verify_files_of(bundle)
    with pytest.raises(BundleError, match="points outside its folder"):
        load_bundle(bundle, verify=False)


@pytest.mark.parametrize("where", ["absolute", "dotdot"])
def test_conformal_dir_outside_the_bundle_is_refused(bundle, tmp_path, fcnn_gbm_bundle, where):
    other = tmp_path / "other"
    shutil.copytree(fcnn_gbm_bundle, other)
    doc = _manifest(bundle)
    target = other / "conformal"
    doc["conformal"]["dir"] = str(target) if where == "absolute" else "../other/conformal"
    _write_manifest(bundle, doc)
    with pytest.raises(BundleError, match=r"conformal folder .* points outside its folder"):
        load_bundle(bundle)
    with pytest.raises(BundleError, match="points outside its folder"):
        load_bundle(bundle, verify=False)


def test_manifest_without_checksums_needs_the_explicit_opt_out(bundle):
    doc = _manifest(bundle)
    del doc["files"]
    _write_manifest(bundle, doc)
    with pytest.raises(BundleError, match=r"no checksums.*verify=False"):
        load_bundle(bundle)
    assert load_bundle(bundle, verify=False).predict(["fcnn:8-16-4"])[0] > 0


def test_files_as_a_list_is_a_clean_error(bundle):
    doc = _manifest(bundle)
    doc["files"] = list(doc["files"])
    _write_manifest(bundle, doc)
    for verify in (True, False):
        with pytest.raises(BundleError, match="'files' must map file names"):
            load_bundle(bundle, verify=verify)


def test_unlisted_file_is_refused(bundle):
    rel = _booster_rel(bundle)
    (bundle / Path(rel).parent / "extra.skops").write_bytes(b"planted")
    with pytest.raises(BundleError, match=r"extra\.skops is not listed"):
        load_bundle(bundle)


def test_mlflow_model_is_covered_and_verified_before_mlflow_loads_it(bundle):
    from latlab.training.mlflow_server import model_dir

    listed = [k for k in _manifest(bundle)["files"] if k.startswith("mlflow_model/")]
    assert "mlflow_model/MLmodel" in listed and any(
        k.endswith("mlflow_pyfunc_entry.py") for k in listed
    )
    assert model_dir(bundle) == bundle / "mlflow_model"
    mlmodel = bundle / "mlflow_model" / "MLmodel"
    text = mlmodel.read_text()
    assert "loader_module: mlflow.pyfunc.loaders.code_model" in text
    # MLflow's own loader for pickled python models: it would unpickle python_model.pkl
    mlmodel.write_text(text.replace("loaders.code_model", "model"))
    with pytest.raises(BundleError, match=r"mlflow_model/MLmodel does not match its checksum"):
        verify_mlflow_model(bundle)
    with pytest.raises(BundleError, match="does not match its checksum"):
        model_dir(bundle / "mlflow_model")
    (bundle / "mlflow_model" / "python_model.pkl").write_bytes(b"planted pickle")
    with pytest.raises(BundleError, match=r"python_model\.pkl is not listed"):
        verify_mlflow_model(bundle)
    # the bundle itself (which never opens mlflow_model/) still loads
    assert load_bundle(bundle).calibrated


def test_stale_staging_of_a_killed_save_is_removed(tmp_path, fcnn_measured):
    from latlab.predictors import make_predictor
    from latlab.training.data import load_training_data

    td = load_training_data(fcnn_measured["csv"], "cpu")
    model = make_predictor("flops").fit(td.networks, td.latency_ms)
    # what kill -9 during a save leaves: a staging folder of a process that no longer runs
    dead = 2**22 + 12345
    while True:
        try:
            os.kill(dead, 0)
            dead += 1
        except ProcessLookupError:
            break
    stale = tmp_path / f".b.{dead}.abc123.tmp"
    (stale / "predictor").mkdir(parents=True)
    (stale / "predictor" / "predictor.json").write_text("{}")
    live = tmp_path / f".b.{os.getpid()}.def456.tmp"  # a save in progress: kept
    live.mkdir()
    save_bundle(tmp_path / "b", model, mlflow_model=False)
    assert not stale.exists() and live.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name, "b"]
    assert clean_stale_staging(tmp_path / "b") == []


# ----------------------------------------------------------------------- the served model


@pytest.fixture
def onnx_folder(tmp_path: Path) -> Path:
    import onnx

    from latlab.datasets.references import onnx_model

    folder = tmp_path / "models"
    folder.mkdir()
    onnx.save(onnx_model("fcnn:8-16-4"), folder / "mlp.onnx")
    return folder


def test_confine_reference_uses_the_scheme_flag(onnx_folder, tmp_path):
    from latlab.datasets.references import SCHEMES, confine_reference, reads_files

    assert SCHEMES["onnx"].reads_files
    assert [n for n, s in SCHEMES.items() if s.reads_files] == ["onnx"]
    assert not reads_files("fcnn:8-16-4") and reads_files("onnx:x.onnx")
    assert confine_reference("fcnn:8-16-4", None) == "fcnn:8-16-4"
    with pytest.raises(NetworkReferenceError, match="does not read") as err:
        confine_reference("onnx:/etc/passwd", None)
    assert "/etc/passwd" not in str(err.value)
    assert confine_reference("onnx:mlp.onnx", onnx_folder) == f"onnx:{onnx_folder / 'mlp.onnx'}"
    (onnx_folder / "link.onnx").symlink_to(tmp_path / "elsewhere.onnx")
    for bad in ("onnx:../../etc/passwd", "onnx:/etc/passwd", "onnx:link.onnx", "onnx:."):
        with pytest.raises(NetworkReferenceError, match="outside the folder") as err:
            confine_reference(bad, onnx_folder)
        assert str(onnx_folder) not in str(err.value)


def test_pyfunc_model_reads_no_server_file_by_default(bundle, onnx_folder, monkeypatch):
    import mlflow.pyfunc
    import pandas as pd
    from mlflow.exceptions import MlflowException

    from latlab.training.mlflow_pyfunc import ONNX_DIR_ENV
    from latlab.training.mlflow_server import model_dir

    monkeypatch.delenv(ONNX_DIR_ENV, raising=False)
    model = mlflow.pyfunc.load_model(str(model_dir(bundle)))
    for ref in ("onnx:/etc/passwd", "onnx:/nonexistent/x.onnx", "onnx:/tmp"):
        with pytest.raises(MlflowException) as err:
            model.predict(pd.DataFrame({"network": ["fcnn:8-16-4", ref]}))
        text = str(err.value)
        assert "row 1" in text and "does not read" in text
        assert "exist" not in text and "directory" not in text and "corrupt" not in text
    ok = model.predict(pd.DataFrame({"network": ["fcnn:8-16-4", " fcnn:4-4 "]}))
    assert len(ok) == 2 and (ok["latency_ms"] > 0).all()

    monkeypatch.setenv(ONNX_DIR_ENV, str(onnx_folder))
    model = mlflow.pyfunc.load_model(str(model_dir(bundle)))
    out = model.predict(pd.DataFrame({"network": ["onnx:mlp.onnx", "fcnn:8-16-4"]}))
    assert list(out["network"]) == ["onnx:mlp.onnx", "fcnn:8-16-4"]
    assert out["latency_ms"][0] > 0
    for ref, why in (("onnx:../secret.onnx", "outside the folder"), ("onnx:gone.onnx", "gone")):
        with pytest.raises(MlflowException, match=why) as err:
            model.predict(pd.DataFrame({"network": [ref]}))
        assert str(onnx_folder) not in str(err.value)


def test_cli_verify_names_the_modified_file(bundle, capsys):
    from latlab.cli import main

    def run(argv):
        try:
            main(argv)
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        return code, *capsys.readouterr()

    code, out, _ = run(["verify", str(bundle)])
    assert code == 0 and "mlflow_model/ included" in out
    (bundle / "mlflow_model" / "code" / "latlab" / "cli" / "app.py").write_text("import os\n")
    code, _, err = run(["verify", str(bundle)])
    assert code == 2 and "mlflow_model/code/latlab/cli/app.py does not match" in err
    assert len(err.strip().splitlines()) == 1
