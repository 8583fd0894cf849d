"""Every predictor trains, predicts, saves and reloads on the fbnet and ofa spaces.

The latencies are a fixed function of each network's IR (a device model: time per MAC, per
byte and per layer), so the test needs no shared data; the predictors, encoders and the
space plug-ins are the real ones, and each must rank held-out networks well.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from latlab.datasets import resolve
from latlab.datasets.spaces import sample
from latlab.predictors import load_predictor, make_predictor

N_TRAIN, N_TEST = 70, 40

#: Small settings for the torch models (speed, not accuracy, is tested here).
PARAMS = {
    "flops": {},
    "layer-sum": {},
    "gbm": {"n_estimators": 150, "learning_rate": 0.1, "n_jobs": 1},
    "rf": {"n_estimators": 30, "n_jobs": 1},
    "fcnn": {"hidden_layers": (64, 32), "max_epochs": 100, "n_jobs": 1},
    "gcn": {"hidden": 48, "num_layers": 2, "max_epochs": 30, "warmup_epochs": 5, "n_jobs": 1},
}
#: Held-out Spearman each predictor must reach on the synthetic devices (layer-sum on OFA
#: tables each distinct layer of 25 resolutions: underdetermined by 70 networks, ~0.85).
MIN_RHO = {"flops": 0.8, "layer-sum": 0.8, "gbm": 0.85, "rf": 0.8, "fcnn": 0.5, "gcn": 0.5}


def device_ms(refs: list[str], per_mac: float, per_byte: float, per_layer: float) -> np.ndarray:
    t = [resolve(r).totals for r in refs]
    return np.array(
        [
            0.05
            + per_mac * x.macs
            + per_byte * (x.bytes_read + x.bytes_written)
            + per_layer * x.n_layers
            for x in t
        ]
    )


@pytest.fixture(scope="module", params=["fbnet", "ofa"])
def space_data(request, tmp_path_factory):
    name = request.param
    refs = sample(name, N_TRAIN + N_TEST, seed=7)
    target = device_ms(refs, 2e-8, 1e-9, 0.004)
    sources = {
        "gpu": device_ms(refs, 1e-9, 2e-10, 0.01),
        "cpu": device_ms(refs, 3e-8, 5e-10, 0.001),
        "phone": device_ms(refs, 5e-8, 2e-9, 0.002),
    }
    table = tmp_path_factory.mktemp(name) / "sources.csv"
    pd.DataFrame({"network": refs, **sources}).to_csv(table, index=False)
    return name, refs, target, table


@pytest.mark.parametrize("predictor", [*PARAMS, "transfer"])
def test_predictor_on_space(space_data, predictor, tmp_path):
    name, refs, y, table = space_data
    params = dict(PARAMS.get(predictor, {}))
    if predictor == "transfer":
        params = {"pretrain": str(table), "source_predictor": "flops"}
        train = slice(0, 10)  # few-shot: ten networks of the target device
    else:
        train = slice(0, N_TRAIN)
    model = make_predictor(predictor, **params)
    model.fit(refs[train], y[train])
    test_refs, test_y = refs[N_TRAIN:], y[N_TRAIN:]
    pred = model.predict(test_refs)
    assert pred.shape == (N_TEST,) and np.all(np.isfinite(pred)) and np.all(pred > 0)
    rho = spearmanr(pred, test_y).statistic
    assert rho >= MIN_RHO.get(predictor, 0.9), (name, predictor, rho)
    model.save(tmp_path / "m")
    again = load_predictor(tmp_path / "m")
    np.testing.assert_allclose(again.predict(test_refs), pred, rtol=1e-5)
