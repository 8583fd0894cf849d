"""The additive op-cost pseudo-source of few-shot transfer: a new kind of device from k = 10."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from latlab.datasets.references import resolve
from latlab.datasets.tables import load_table
from latlab.encoders.vector import make_vector_encoder
from latlab.errors import FeatureError
from latlab.predictors import load_predictor, make_predictor
from latlab.predictors.additive import additive_specs, fit_additive, loo_additive, predict_additive
from latlab.training.metrics import regression_metrics

NB201 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nb201_latency.csv"
GPUS = ["1080ti_1", "1080ti_32", "1080ti_256", "titanx_1", "titanx_32", "titanx_256"]


def test_fit_recovers_non_negative_op_costs_and_loo_is_refitting_without_each_network():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 4, size=(12, 4)).astype(float)
    y = 1.5 + x @ np.array([2.0, 0.0, 5.0, 0.5])
    state = fit_additive(x, y)
    assert np.allclose(predict_additive(state, x), y, rtol=1e-9)
    # Costs an unconstrained fit would make negative are clamped at zero, never below.
    noisy = y + rng.normal(0, 0.5, len(y))
    assert min(fit_additive(x, noisy)["coef"]) >= 0.0
    loo = loo_additive(x, noisy)
    for i in (0, 7):
        keep = np.arange(len(y)) != i
        alone = predict_additive(fit_additive(x[keep], noisy[keep]), x[i : i + 1])[0]
        assert loo[i] == pytest.approx(alone)
    # An all-zero fit still predicts a positive latency (its log is a source value).
    assert predict_additive(fit_additive(np.zeros((3, 2)), np.ones(3)), np.zeros((1, 2)))[0] > 0


def test_nb201_count_parts_split_the_encoder_columns():
    graphs = [resolve(f"nb201:{a}") for a in (
        "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|none~1|nor_conv_1x1~2|",
        "|none~0|+|nor_conv_3x3~0|none~1|+|none~0|none~1|nor_conv_3x3~2|",
    )]  # fmt: skip
    full = make_vector_encoder("nb201-counts").transform(graphs)
    edges = make_vector_encoder("nb201-edge-counts").transform(graphs)
    live = make_vector_encoder("nb201-live-counts").transform(graphs)
    assert np.array_equal(np.hstack([edges, live]), full) and edges.shape == (2, 5)
    assert edges.sum(axis=1).tolist() == [6, 6]  # every edge carries one op
    # The second cell's four none edges are on no input-output path: only its two convs live.
    assert live[1].sum() < edges[1].sum()
    assert additive_specs(graphs) == ("nb201-edge-counts", "nb201-live-counts", "summary-linear")
    assert additive_specs([resolve("zoo:resnet18")]) == ()  # of no search space
    assert additive_specs([resolve("fbnet:" + "-".join(["k3_e1"] * 22))]) == ("summary-linear",)
    with pytest.raises(FeatureError, match="unknown nb201 count part 'dead'"):
        make_vector_encoder("nb201-counts", **{"nb201-counts": {"part": "dead"}}).transform(graphs)


@pytest.fixture(scope="module")
def new_kind():
    """k = 10 networks of a batch-256 GPU, and 2000 others; every GPU held out of pretraining."""
    if not NB201.exists():
        pytest.skip(f"shared data not found at {NB201} (only in the development checkout)")
    valid = load_table(NB201).valid("titanx_256")
    nets = list(valid["network"])
    y = valid["latency_ms"].to_numpy(dtype=float)
    perm = np.random.default_rng(0).permutation(len(nets))
    k, test = perm[:10], perm[10:2010]
    return [nets[i] for i in k], y[k], [nets[i] for i in test], y[test]


def test_a_new_kind_of_device_is_ranked_by_its_op_costs(new_kind):
    k_nets, k_y, test_nets, test_y = new_kind
    rho = {}
    for additive in ("auto", "none"):
        model = make_predictor(
            "transfer", pretrain=str(NB201), target_exclude=GPUS, additive=additive
        ).fit(k_nets, k_y)
        rho[additive] = regression_metrics(test_y, model.predict(test_nets))["spearman"]
    # Measured: 0.997 with the additive pseudo-source, 0.81 from CPUs and phones alone.
    assert rho["auto"] > 0.97 and rho["auto"] > rho["none"] + 0.1, rho
    weights = model.source_weights()  # the "none" model has no additive source
    assert not any(n.startswith("additive:") for n in weights)
    weights = (
        make_predictor("transfer", pretrain=str(NB201), target_exclude=GPUS)
        .fit(k_nets, k_y)
        .source_weights()
    )
    assert max(weights, key=weights.get).startswith("additive:"), weights


def test_the_additive_sources_survive_save_and_load(new_kind, tmp_path):
    k_nets, k_y, test_nets, _ = new_kind
    model = make_predictor("transfer", pretrain=str(NB201), target_exclude=GPUS).fit(k_nets, k_y)
    model.save(tmp_path / "m")
    state = json.loads((tmp_path / "m" / "predictor.json").read_text())["state"]
    assert [a["spec"] for a in state["additive"]] == [
        "nb201-edge-counts",
        "nb201-live-counts",
        "summary-linear",
    ]
    again = load_predictor(tmp_path / "m")
    assert np.array_equal(again.predict(test_nets[:300]), model.predict(test_nets[:300]))
    with pytest.raises(FeatureError, match="no-such-counts"):
        make_predictor(
            "transfer", pretrain=str(NB201), target_exclude=GPUS, additive="no-such-counts"
        ).fit(k_nets, k_y)
