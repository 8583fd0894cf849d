"""Layer models (fitting laws on synthetic points), mapping trees, and the layer-wise
predictors trained on real measured benchmarks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from latlab.datasets.bench.campaign import run_bench
from latlab.datasets.bench.export import training_table
from latlab.datasets.bench.suites import SESSION_PROBE, multilayer_suite
from latlab.datasets.measure import MeasureConfig, measure
from latlab.datasets.references import resolve
from latlab.datasets.store import Store
from latlab.encoders.builder import NetBuilder
from latlab.errors import DataError, NotFittedError
from latlab.predictors import load_predictor, make_predictor
from latlab.predictors.layerwise import LAYER_COLUMNS, LayerwisePredictor, MappingModel
from latlab.predictors.layerwise.layer_inputs import layer_record, model_key
from latlab.predictors.layerwise.mapping import labelled_pairs, mapping_scores
from latlab.predictors.layerwise.models import Lut, Mixed, Refined, Roofline, Work, u_eff
from latlab.predictors.layerwise.predictor import runtime_labels

MODELS = ("roofline", "refined", "statistical", "mixed", "lut")


def _records(refs: list[str]) -> list[dict]:
    return [layer_record(resolve(r).layers[0]) for r in refs]


def _conv_refs() -> list[str]:
    refs = []
    for f in (8, 12, 16, 20, 24, 31, 32, 33, 40, 48, 56, 64, 72, 96, 100, 128):
        for h in (7, 14, 28):
            refs.append(f"kernel:conv?c=32&h={h}&f={f}&k=3")
    return refs


# --------------------------------------------------------------------------- laws


def test_roofline_recovers_peaks_of_an_exact_roofline() -> None:
    work = Work(_records([*_conv_refs(), "kernel:relu?c=64&h=56", "kernel:add?c=128&h=28"]))
    p_peak, b_peak = 2e11, 5e10
    t = np.maximum(work.ops / p_peak, work.bytes / b_peak) * 1e3
    model = Roofline("conv", min_time_ms=0.0).fit(work, t)
    assert model.p_peak == pytest.approx(p_peak, rel=1e-9)
    assert model.b_peak == pytest.approx(b_peak, rel=1e-9)
    np.testing.assert_allclose(model.predict(work), t, rtol=1e-9)


def test_roofline_memory_and_compute_terms_follow_the_precision() -> None:
    from latlab.encoders.quantize import at_precision

    refs = [*_conv_refs(), "kernel:relu?c=64&h=56", "kernel:add?c=128&h=28"]
    fp = Work(_records(refs))
    q = Work([layer_record(at_precision(resolve(r), "int8").layers[0]) for r in refs])
    # weights and activations at one byte: a quarter of the fp32 bytes (weights rounded up)
    np.testing.assert_allclose(q.bytes, fp.bytes / 4, rtol=0.02)
    conv = np.array([r.startswith("kernel:conv") for r in refs])
    np.testing.assert_allclose(q.ops[conv], fp.ops[conv] / 4)  # four int8 MACs per lane
    p_peak, b_peak = 2e11, 5e10
    t = np.maximum(fp.ops / p_peak, fp.bytes / b_peak) * 1e3
    model = Roofline("conv", min_time_ms=0.0).fit(fp, t)
    np.testing.assert_allclose(model.predict(q)[conv], t[conv] / 4, rtol=0.02)


def test_u_eff_is_annettes_formula() -> None:
    dims = {"f": np.array([16.0, 17.0, 8.0])}
    u = u_eff(dims, {"f": (16, 0.25)})
    ratio = np.ceil(dims["f"] / 16) / (dims["f"] / 16)  # 1, 32/17, 2
    np.testing.assert_allclose(u, 1 / (0.25 + ratio * 0.75))
    assert u[0] == 1.0
    np.testing.assert_allclose(u_eff(dims, {"f": (16, 1.0)}), 1.0)


def test_refined_recovers_unrolling_and_alpha() -> None:
    work = Work(_records(_conv_refs()))
    truth = {"f": (16, 0.3)}
    u = u_eff({"f": work.dim("f")}, truth)
    t = work.ops / (1e11 * u) * 1e3
    model = Refined("conv", min_time_ms=0.0).fit(work, t)
    s, alpha = model.unroll["f"]
    assert s == 16 and alpha == pytest.approx(0.3, abs=0.02)
    assert all(v == (1, 1.0) or v[1] > 0.95 for d, v in model.unroll.items() if d != "f")
    np.testing.assert_allclose(model.predict(work), t, rtol=0.02)
    assert model.peak == pytest.approx(1e11, rel=0.02)


def test_mixed_learns_what_unrolling_does_not_explain() -> None:
    fs = (8, 12, 16, 20, 24, 31, 32, 33, 40, 48, 56, 64, 72, 96, 100, 128)
    refs = [f"kernel:conv?c=32&h=14&f={f}&k={k}" for f in fs for k in (1, 3, 5)]
    work = Work(_records(refs))
    u = u_eff({"f": work.dim("f")}, {"f": (16, 0.0)})
    # an efficiency the unrolled dimensions (f, c, w) cannot explain: it depends on the kernel
    extra = np.select([work.dim("k_h") == 1, work.dim("k_h") == 3], [0.5, 1.0], 0.8)
    t = work.ops / (1e11 * u * extra) * 1e3
    refined = Refined("conv", min_time_ms=0.0).fit(work, t)
    mixed = Mixed("conv", min_time_ms=0.0, min_points=5).fit(work, t)
    assert mixed.trained_on == "u_eff=1"
    err_r = np.median(np.abs(refined.predict(work) / t - 1))
    err_m = np.median(np.abs(mixed.predict(work) / t - 1))
    assert err_m < 0.05 < err_r


def test_lut_returns_the_nearest_entry_scaled_by_work() -> None:
    refs = _conv_refs()
    work = Work(_records(refs))
    t = np.linspace(0.1, 2.0, len(refs))
    lut = Lut("conv").fit(work, t)
    np.testing.assert_allclose(lut.predict(work), t)
    # nearest entry with the same layout flags (f a multiple of 4, not of 16): f=100
    q = Work(_records(["kernel:conv?c=32&h=28&f=104&k=3"]))
    nearest = t[refs.index("kernel:conv?c=32&h=28&f=100&k=3")]
    assert lut.predict(q)[0] == pytest.approx(nearest * 104 / 100)


def test_model_keys() -> None:
    keys = [model_key(resolve(r).layers[0]) for r in (
        "kernel:conv?c=8&h=4", "kernel:dwconv?c=8&h=4", "kernel:maxpool?c=8&h=4&k=2",
        "kernel:avgpool?c=8&h=4&k=2", "kernel:add?c=8&h=4", "kernel:relu6?c=8",
        "kernel:bn?c=8&h=4", "kernel:gpool?c=8&h=4", "kernel:concat?c=8&h=4",
    )]  # fmt: skip
    assert keys == ["conv", "dwconv", "maxpool", "avgpool", "add", "act:Clip", "bn", "gpool",
                    "concat"]  # fmt: skip


# --------------------------------------------------------------------------- mapping


def test_mapping_scores_compute_f1_and_mcc() -> None:
    y = [1] * 7 + [0] * 4  # tp=5 fn=2, fp=1 tn=3
    p = [1] * 5 + [0] * 2 + [1] + [0] * 3
    s = mapping_scores(y, p)
    assert s["mcc"] == pytest.approx((5 * 3 - 1 * 2) / math.sqrt(6 * 7 * 4 * 5))
    assert s["f1"] == pytest.approx(2 * 5 / (2 * 5 + 1 + 2))
    assert s["n"] == 11 and s["fused"] == 7 and s["accuracy"] == pytest.approx(8 / 11)


def _resnet_stage() -> NetBuilder:
    b = NetBuilder("stage", (1, 3, 64, 64))
    x = b.maxpool(b.relu(b.bn(b.conv(b.input, 32, 7, 2))), 3, 2, 1)
    y = b.bn(b.conv(b.relu(b.bn(b.conv(x, 32, 3))), 32, 3))
    x = b.relu(b.add(y, x))
    y = b.bn(b.conv(b.relu(b.bn(b.conv(x, 64, 3, 2))), 64, 3))
    x = b.relu(b.add(y, b.bn(b.conv(x, 64, 1, 2))))
    b.gemm(b.flatten(b.global_avgpool(x)), 10)
    return b


def test_mapping_trees_learn_onnxruntime_fusion_from_benchmarks() -> None:
    graphs = [resolve(r) for r in multilayer_suite(64, seed=0)]
    pairs = labelled_pairs(graphs, [runtime_labels(g) for g in graphs])
    model = MappingModel().fit(pairs)
    net = _resnet_stage().build()
    truth = labelled_pairs([net], [runtime_labels(net)])
    scores = mapping_scores(truth["fused"], model.predict_pairs(truth))
    assert scores["mcc"] >= 0.8, scores
    groups = model.groups(net)
    assert sorted(i for g in groups for i in g) == list(range(len(net.layers)))
    # a residual Add joins exactly one convolution group
    for g in groups:
        assert sum(net.layers[i].op == "Conv" for i in g) <= 1


# --------------------------------------------------------------------------- real benchmarks

FAST = MeasureConfig(repeats=20, min_repeats=5, time_budget_s=0.08, max_warmup=10,
                     max_warmup_s=0.05)  # fmt: skip


def _bench_refs() -> list[str]:
    refs = [SESSION_PROBE]
    for f in (16, 24, 32, 48, 64):
        for h in (8, 16, 28):
            refs.append(f"kernel:conv?c=16&h={h}&f={f}&k=3")
    refs += [f"kernel:conv?c={c}&h=14&f=32" for c in (8, 32, 64)]
    refs += [f"kernel:fc?c={c}&f=10" for c in (64, 256)]
    refs += [f"kernel:relu?c={c}&h=16" for c in (16, 64)]
    refs += [f"kernel:maxpool?c={c}&h=32&k=3&s=2" for c in (16, 32)]
    refs += ["kernel:add?c=32&h=16", "kernel:gpool?c=64&h=8", "kernel:bn?c=16&h=32"]
    return refs


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory):
    st = Store(tmp_path_factory.mktemp("lm") / "bench.db")
    refs = _bench_refs()
    run_bench("kernels", st, "cpu", references=refs, config=FAST, profile_runs=3)
    run_bench("padding", st, "cpu", references=refs[1:], config=FAST)
    return training_table(st, "cpu")


def _net():
    b = NetBuilder("net", (1, 16, 28, 28))
    x = b.relu(b.bn(b.conv(b.input, 32, 3)))
    x = b.maxpool(x, 3, 2, 1)
    x = b.relu(b.add(b.bn(b.conv(x, 32, 3)), x))
    b.gemm(b.flatten(b.global_avgpool(x)), 10)
    return b.build()


@pytest.fixture(scope="module")
def fitted(table) -> dict[str, LayerwisePredictor]:
    out = {}
    for name in MODELS:
        model = make_predictor(name, mapping_networks=24, min_points=5, n_estimators=30)
        assert isinstance(model, LayerwisePredictor)
        out[name] = model.fit(list(table["network"]), table["cpu"].to_numpy())
    return out


def test_predictors_fit_real_benchmarks_and_predict_networks(table, fitted) -> None:
    net = _net()
    measured = measure(net, FAST).median_ms
    for name, model in fitted.items():
        assert model.training_["layer_points"] == len(table) - 1
        assert model.training_["session_probes"] == 1
        assert model.overhead_ms_ == pytest.approx(table.set_index("network").loc[
            SESSION_PROBE, "cpu@single"])  # fmt: skip
        (p,) = model.predict([net])
        # every model lands within a factor 3 of the real latency of an unseen network
        assert measured / 3 < p < measured * 3, (name, p, measured)
    # on the conv benchmarks themselves (types with >= min_points points have their own model;
    # the others fall back to the roofline): the LUT returns them, the forest beats the roofline
    conv = table[table["network"].str.startswith("kernel:conv?")]
    y = conv["cpu"].to_numpy()
    refs = list(conv["network"])
    over = fitted["lut"].overhead_ms_
    np.testing.assert_allclose(fitted["lut"].predict(refs) - over, y, rtol=1e-9)

    def err(name: str) -> float:
        return float(np.median(np.abs((fitted[name].predict(refs) - over) / y - 1)))

    assert err("statistical") < err("roofline")


def test_predict_layers_sums_to_predict(fitted) -> None:
    nets = [_net(), _resnet_stage().build()]
    for model in fitted.values():
        layers = model.predict_layers(nets)
        assert list(layers.columns) == list(LAYER_COLUMNS)
        sums = layers.groupby("network_index")["predicted_ms"].sum().to_numpy()
        np.testing.assert_allclose(sums + layers.attrs["overhead_ms"], model.predict(nets))
        assert (layers["predicted_ms"] > 0).all()
        covered = sorted(i for t in layers[layers.network_index == 0].layer_indices for i in t)
        assert covered == list(range(len(nets[0].layers)))
        conv_head = layers[(layers.network_index == 0) & (layers.kind == "conv")]
        assert conv_head["model"].str.startswith("conv:").all()
    fallback = fitted["mixed"].predict_layers(nets)
    flat = fallback[fallback["op"] == "Flatten"]
    assert flat["model"].str.endswith(":roofline").all()  # no Flatten benchmark: fallback


def test_save_load_gives_identical_predictions_and_readable_json(fitted, tmp_path: Path) -> None:
    nets = [_net(), _resnet_stage().build()]
    for name, model in fitted.items():
        d = model.save(tmp_path / name)
        doc = json.loads((d / "predictor.json").read_text())
        assert doc["predictor"] == name
        state = doc["state"]
        conv = state["models"]["conv"]
        assert conv["model"] == name and conv["P_peak_ops_per_s"] > 0
        if name in ("refined", "mixed"):
            assert set(conv["unrolled"]) == {"f", "c", "w"}
            assert all(v["s"] in (1, 2, 4, 8, 16, 32, 64) for v in conv["unrolled"].values())
        assert state["mapping"]["trees"] or state["mapping"]["constants"]
        loaded = load_predictor(d)
        np.testing.assert_array_equal(loaded.predict(nets), model.predict(nets))


def test_layerwise_predictors_at_int8_count_a_quarter_of_the_bytes(fitted) -> None:
    import copy

    net = _net()
    for name in ("roofline", "refined", "mixed", "statistical"):
        fp = fitted[name]
        q = copy.copy(fp)
        q.precision = "int8"
        lf, lq = fp.predict_layers([net]), q.predict_layers([net])
        assert lq["bytes"].sum() == pytest.approx(lf["bytes"].sum() / 4, rel=0.02), name
        conv = (lf["kind"] == "conv").to_numpy()
        # the roofline's memory and compute terms both shrink at int8
        assert (lq["predicted_ms"].to_numpy()[conv] < lf["predicted_ms"].to_numpy()[conv]).all()
    r = copy.copy(fitted["roofline"])
    r.precision = "int8"
    lf = fitted["roofline"].predict_layers([net])
    lq = r.predict_layers([net])
    np.testing.assert_allclose(lq["predicted_ms"], lf["predicted_ms"] / 4, rtol=0.05)
    with pytest.raises(ValueError, match="int4"):
        make_predictor("roofline", precision="int4").fit(["kernel:relu?c=16&h=16"] * 2, [1.0, 1.0])


def test_bad_training_data_is_refused() -> None:
    model = make_predictor("roofline", mapping="none")
    with pytest.raises(DataError, match="no single-layer benchmarks"):
        model.fit([_net(), _net()], [1.0, 2.0])
    with pytest.raises(NotFittedError):
        make_predictor("mixed").predict_layers([_net()])
    with pytest.raises(DataError, match=r"fusion table 'nope\.csv' not found"):
        make_predictor("lut", mapping="nope.csv").fit(
            ["kernel:relu?c=8&h=4", "kernel:relu?c=16&h=4"], [0.01, 0.02]
        )
