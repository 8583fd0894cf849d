"""The NAS fast path: Bundle.predict with its feature cache, the pyfunc model in the bundle.

Bundles are trained here for real: on the FCNN latencies measured by the session fixture
(available everywhere, CI included) and, where the shared table exists, on nb201 rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import latlab
from latlab.datasets.references import resolve
from latlab.errors import NetworkReferenceError
from latlab.training.feature_cache import CachedPredictor, FeatureCache, resolve_fast, stage_for


def test_predict_matches_predictor_and_keeps_order(fcnn_gbm_bundle: Path, fcnn_refs: list[str]):
    b = latlab.load_bundle(fcnn_gbm_bundle)
    ms = b.predict(fcnn_refs)
    assert ms.shape == (len(fcnn_refs),)
    # the cached path runs the same model as the predictor's own predict: identical numbers
    np.testing.assert_array_equal(ms, b.predictor.predict(fcnn_refs))
    np.testing.assert_array_equal(b.predict(fcnn_refs[::-1]), ms[::-1])
    graphs = [resolve(r) for r in fcnn_refs[:10]]
    np.testing.assert_array_equal(b.predict(graphs), ms[:10])
    low, high = b.predict_interval(fcnn_refs, 0.9)
    assert np.all(low <= ms) and np.all(ms <= high) and np.all(low > 0)
    low8, high8 = b.predict_interval(fcnn_refs, 0.8)
    assert np.all(high8 <= high) and np.all(low8 >= low)


def test_cache_skips_encoding_on_repeats(fcnn_gbm_bundle: Path, fcnn_refs: list[str]):
    b = latlab.load_bundle(fcnn_gbm_bundle)
    first = b.predict(fcnn_refs[:30] + fcnn_refs[:30])  # duplicates within one call: once
    assert b.cache.stats()["encoded"] == 30 and b.cache.stats()["misses"] == 60
    second = b.predict(fcnn_refs[:30])
    stats = b.cache.stats()
    assert stats["encoded"] == 30 and stats["hits"] == 30  # nothing encoded the second time
    np.testing.assert_array_equal(first[:30], second)
    b.predict(fcnn_refs[20:40])
    assert b.cache.stats()["encoded"] == 40  # only the 10 new ones
    b.predict_interval(fcnn_refs[:40])
    assert b.cache.stats()["encoded"] == 40


def test_cache_is_bounded_lru():
    cache = FeatureCache(maxsize=3)
    cache.put_many(["a", "b", "c"], [1, 2, 3])
    assert cache.get_many(["a"]) == [1]  # a is now the most recent
    cache.put_many(["d"], [4])
    assert cache.get_many(["b", "a", "c", "d"]) == [None, 1, 3, 4]
    assert len(cache) == 3 and cache.stats()["misses"] == 1
    off = FeatureCache(maxsize=0)
    off.put_many(["a"], [1])
    assert off.get_many(["a"]) == [None] and off.encoded == 1


def test_bad_reference_names_its_row(fcnn_gbm_bundle: Path, fcnn_refs: list[str]):
    b = latlab.load_bundle(fcnn_gbm_bundle)
    with pytest.raises(NetworkReferenceError, match=r"row 2: .*'foo'"):
        b.predict([fcnn_refs[0], fcnn_refs[1], "foo:bar"])
    with pytest.raises(NetworkReferenceError, match=r"row 1: .*fcnn:8-x-4"):
        b.predict_interval([fcnn_refs[0], "fcnn:8-x-4"])
    with pytest.raises(NetworkReferenceError, match=r"row 0: .*int"):
        b.predict([3])
    assert b.cache.stats()["size"] == 0  # nothing half-cached from a failed call


@pytest.mark.parametrize("name", ["rf", "fcnn", "gcn"])
def test_stage_adapters_equal_predictor(name: str, fcnn_measured: dict):
    from latlab.predictors.base import make_predictor

    frame = pd.read_csv(fcnn_measured["csv"])
    refs, y = frame["network"].tolist(), frame["cpu"].to_numpy()
    small = {
        "rf": {"n_estimators": 20},
        "fcnn": {"hidden_layers": [16], "max_epochs": 5},
        "gcn": {"hidden": 16, "num_layers": 2, "max_epochs": 3},
    }[name]
    p = make_predictor(name, **small).fit(refs[:60], y[:60])
    fast = CachedPredictor(p)
    assert fast.stage.kind != "graphs"
    np.testing.assert_allclose(fast.predict(refs), p.predict(refs), rtol=1e-6)
    np.testing.assert_allclose(fast.predict(refs[::-1]), p.predict(refs)[::-1], rtol=1e-6)
    assert fast.cache.stats()["encoded"] == len(set(refs))


def test_other_predictors_cache_graphs(fcnn_measured: dict):
    from latlab.predictors.base import make_predictor

    frame = pd.read_csv(fcnn_measured["csv"])
    refs, y = frame["network"].tolist(), frame["cpu"].to_numpy()
    p = make_predictor("flops").fit(refs, y)
    assert stage_for(p).kind == "graphs"
    np.testing.assert_array_equal(CachedPredictor(p).predict(refs), p.predict(refs))


def test_nb201_fast_path_encodes_alike(nb201_small: Path):
    from latlab.predictors.vector_features import VectorFeatures

    refs = pd.read_csv(nb201_small)["network"].tolist()[:300]
    fast = [resolve_fast(r) for r in refs]
    slow = [resolve(r) for r in refs]
    assert type(fast[0]) is not type(slow[0])
    for spec in ("nb201-onehot+nb201-counts", "summary"):
        enc, x_slow = VectorFeatures.fit(spec, slow)
        np.testing.assert_array_equal(enc.transform(fast), x_slow)
    assert fast[5].digest == slow[5].digest and fast[5].totals == slow[5].totals
    # malformed arch strings take the general path and its error
    with pytest.raises(NetworkReferenceError, match="bogus"):
        resolve_fast("nb201:|bogus~0|+|")


def test_nb201_refs_graphs_and_bare_strings(nb201_gbm_bundle: Path, nb201_small: Path):
    refs = pd.read_csv(nb201_small)["network"].tolist()
    b = latlab.load_bundle(nb201_gbm_bundle)
    ms = b.predict(refs)
    np.testing.assert_array_equal(ms, b.predictor.predict(refs))
    bare = [r.removeprefix("nb201:") for r in refs[:50]]
    np.testing.assert_array_equal(b.predict(bare), ms[:50])
    np.testing.assert_array_equal(b.predict([resolve(r) for r in refs[:50]]), ms[:50])
    frame = b.predict_frame(bare[:5], 0.8)
    assert frame["network"].tolist() == refs[:5]  # bare strings come back as references
    assert (frame["lower_ms"] <= frame["latency_ms"]).all()
    assert (frame["latency_ms"] <= frame["upper_ms"]).all()


def test_bundle_holds_a_loadable_pyfunc_model(fcnn_gbm_bundle: Path, fcnn_refs: list[str]):
    import mlflow.pyfunc

    model_dir = fcnn_gbm_bundle / "mlflow_model"
    assert (model_dir / "MLmodel").is_file()
    manifest = latlab.load_bundle(fcnn_gbm_bundle).manifest
    assert manifest["mlflow_model"] == "mlflow_model"
    model = mlflow.pyfunc.load_model(str(model_dir))
    out = model.predict(pd.DataFrame({"network": fcnn_refs[:8]}), params={"confidence": 0.8})
    expected = latlab.load_bundle(fcnn_gbm_bundle).predict_frame(fcnn_refs[:8], 0.8)
    assert out["network"].tolist() == fcnn_refs[:8]
    np.testing.assert_allclose(out["latency_ms"], expected["latency_ms"])
    np.testing.assert_allclose(out["upper_ms"], expected["upper_ms"])
    # the model's copy of the bundle does not nest another model
    assert not (model_dir / "artifacts" / "bundle" / "mlflow_model").exists()


def test_model_logged_before_the_rename_still_loads(
    fcnn_gbm_bundle: Path, fcnn_refs: list[str], tmp_path: Path
):
    """A model logged before ``pyfunc.py`` became ``mlflow_pyfunc.py``: its entry file imports
    ``latlab.training.pyfunc`` (the alias module), and it answers like the bundle."""
    import shutil

    import mlflow.pyfunc
    import yaml

    model_dir = tmp_path / "old_model"
    shutil.copytree(fcnn_gbm_bundle / "mlflow_model", model_dir)
    conf = yaml.safe_load((model_dir / "MLmodel").read_text())
    entry = conf["flavors"]["python_function"]["model_code_path"]
    new_entry = model_dir / Path(entry).name
    assert new_entry.name == "mlflow_pyfunc_entry.py" and new_entry.is_file()
    old_entry = model_dir / "pyfunc_model.py"
    old_entry.write_text(
        '"""MLflow "model from code" entry point of a latlab bundle."""\n\n'
        "from mlflow.models import set_model\n\n"
        "from latlab.training.pyfunc import BundleModel\n\n"
        "set_model(BundleModel())\n"
    )
    new_entry.unlink()
    text = (
        (model_dir / "MLmodel")
        .read_text()
        .replace(str(entry), str(Path(entry).with_name("pyfunc_model.py")))
    )
    (model_dir / "MLmodel").write_text(text)
    model = mlflow.pyfunc.load_model(str(model_dir))
    out = model.predict(pd.DataFrame({"network": fcnn_refs[:8]}), params={"confidence": 0.8})
    expected = latlab.load_bundle(fcnn_gbm_bundle).predict_frame(fcnn_refs[:8], 0.8)
    np.testing.assert_allclose(out["latency_ms"], expected["latency_ms"])
    np.testing.assert_allclose(out["upper_ms"], expected["upper_ms"])
