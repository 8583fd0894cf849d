"""The kernel-level predictor: generated blocks, runtime kernels, the context suite, ``kernel``.

Real onnxruntime sessions and profiles of tiny generated networks, a real SQLite store.
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from cli_helpers import run_cli
from latlab.datasets.bench.campaign import run_bench
from latlab.datasets.bench.context import candidate_scores
from latlab.datasets.bench.export import kernel_rows
from latlab.datasets.bench.kernels_runtime import ir_kernels, runtime_kernels
from latlab.datasets.references import resolve
from latlab.datasets.spaces.blocks import (
    BIG_FAMILIES,
    FAMILIES,
    format_block,
    parse_block,
    sample_blocks,
)
from latlab.datasets.store import Store
from latlab.errors import DataError, NetworkReferenceError
from latlab.predictors import load_predictor, make_predictor
from latlab.predictors.kernel import (
    base_family,
    fit_family,
    ir_kernels_mapped,
    model_family,
)
from latlab.predictors.layerwise.predictor import runtime_mapping_model

TINY = [
    "block:transformer?d=64&h=2&s=16",
    "block:transformer?act=relu&causal=1&d=64&s=32",
    "block:transformer?d=128&ff=2&h=2&s=16",
    "block:transformer?act=swiglu&bias=0&causal=1&d=64&h=2&norm=rms&rope=1&s=16",
    "block:mbconv?c=16&e=3&h=14&se=1",
    "block:basic?c=16&h=14",
    "block:basic?c=32&f=64&h=14&s=2",
    "block:mbconv?act=hswish&c=24&h=14&k=5",
    "kernel:conv?h=14&c=16&f=32&k=3",
    "kernel:padding?c=1",
]


# --------------------------------------------------------------------------- blocks


def test_block_references_are_canonical_and_checked():
    fam, params = parse_block("transformer?s=64&d=128&h=8")
    assert fam == "transformer" and params["d"] == 128 and params["s"] == 64
    assert format_block(fam, params) == "block:transformer?d=128&h=8&s=64"
    assert format_block("mbconv", dict(FAMILIES["mbconv"])) == "block:mbconv"
    with pytest.raises(NetworkReferenceError, match="unknown key 'x'"):
        parse_block("transformer?x=1")
    with pytest.raises(NetworkReferenceError, match="multiple of h"):
        parse_block("transformer?d=100&h=3")
    with pytest.raises(NetworkReferenceError, match="unknown block family"):
        resolve("block:lstm")


def test_every_family_builds_and_samples_respect_the_cost_cap():
    for fam in FAMILIES:
        g = resolve(format_block(fam, {}))
        assert g.totals.macs > 0, fam
    refs = sample_blocks(12, seed=3, max_macs=2e8)
    assert refs == sample_blocks(12, seed=3, max_macs=2e8)  # seeded
    assert len(set(refs)) == 12
    for r in refs:  # VGG-style plain blocks may cost BIG_FAMILIES times the cap
        family = r.partition(":")[2].partition("?")[0]
        assert resolve(r).totals.macs <= 2e8 * BIG_FAMILIES.get(family, 1.0)


def test_block_sampling_bounds_parameters():
    """The default context suite once drew a flattened 224x224 map into a 1024-wide layer
    (3.3 G weights, 13 GB: the 24 GB machine ran out of memory). Draws above MAX_PARAMS are
    dropped without moving the draws after them, so the main job's suite is unchanged."""
    from latlab.datasets.bench.campaign import suite_references
    from latlab.datasets.spaces.blocks import MAX_PARAMS

    huge = "block:plain?c=32&f=64&fc=1024&gpool=flatten&h=224&head=10&n=1&pool=0"
    assert resolve(huge).totals.params > 20 * MAX_PARAMS
    wide = suite_references("context", 240, 0)  # the default bench's first 120
    assert huge not in wide and len(wide) == 120
    assert all(resolve(r).totals.params <= MAX_PARAMS for r in wide if r.startswith("block:"))
    # a rejected draw drops out and the draws after it stay: a tighter cap keeps the order
    loose = sample_blocks(40, seed=5, max_macs=1e12)
    tight = sample_blocks(8, seed=5, max_macs=2e8)

    def cap(r: str) -> float:
        return 2e8 * BIG_FAMILIES.get(r.partition(":")[2].partition("?")[0], 1.0)

    assert tight == [r for r in loose if resolve(r).totals.macs <= cap(r)][:8]


def test_blocks_generate_the_kernel_families_real_networks_need():
    """Squeeze (timm's indexed qkv), Slice (Swin's patch merging), grouped FusedConv
    (RegNet-like group widths), ConvTranspose and Resize (U-Net) come from generated blocks."""

    def fams(ref: str) -> set[str]:
        return {k.family for k in runtime_kernels(ref)}

    assert "Squeeze" in fams("block:transformer?d=64&h=2&s=16&qkv=2")
    assert "Slice" in fams("block:vit?img=64&p=8&d=64&h=2&pm=1")
    # group width 20: a multiple of neither SIMD block (8 with AVX2, 16 with AVX-512), so
    # onnxruntime keeps the grouped convolution out of its blocked layout on any x86 CPU
    assert "com.microsoft.FusedConv/grouped" in fams("block:bottleneck?h=14&c=128&m=40&g=2")
    assert "ConvTranspose" in fams("block:unet?h=32&c=16&levels=1&up=convt")
    assert "Resize" in fams("block:unet?h=32&c=16&levels=1")
    refs = sample_blocks(240, seed=0)
    assert sum("qkv=2" in r for r in refs) >= 10
    assert sum(r.startswith("block:bottleneck") and "g=" in r for r in refs) >= 15
    assert sum(r.startswith("block:unet") for r in refs) >= 12
    assert any("pm=1" in r for r in refs) and any("roll=1" in r for r in refs)


# --------------------------------------------------------------------------- runtime kernels


def test_runtime_kernels_of_a_transformer_block():
    ks = runtime_kernels("block:transformer?d=64&h=2&s=16")
    fams = {k.family for k in ks}
    # onnxruntime's fusions: MatMul+Add -> Gemm, scaled Q.K^T -> FusedMatMul, Erf-GELU -> Gelu
    assert {"Gemm", "LayerNormalization", "Softmax", "com.microsoft.Gelu"} <= fams
    assert "com.microsoft.FusedMatMul/act" in fams and "MatMul/act" in fams
    gemm = next(k for k in ks if k.family == "Gemm")
    assert (gemm.features["m"], gemm.features["k"], gemm.features["nn"]) == (16, 64, 64)
    assert gemm.features["macs"] == 16 * 64 * 64
    qk = next(k for k in ks if k.family == "com.microsoft.FusedMatMul/act")
    assert qk.features["batch"] == 2 and qk.features["m"] == 16 and qk.features["nn"] == 16


def test_ir_kernels_with_mapping_groups_are_the_runtime_kernels():
    mapping, pairs = runtime_mapping_model(64)
    assert pairs > 100
    ref = "block:transformer?d=64&h=2&s=16"
    g = resolve(ref)
    ir = ir_kernels(g, mapping.groups(g))
    rt = runtime_kernels(ref)
    # the same kernels (Gemm between Reshapes, FusedMatMul, Gelu, SkipLayerNormalization, ...)
    assert Counter(k.family for k in ir) == Counter(k.family for k in rt)
    assert sum(k.features["macs"] for k in ir) == sum(k.features["macs"] for k in rt)
    gemm_ir = sorted((k.features["m"], k.features["k"], k.features["nn"]) for k in ir
                     if k.family == "Gemm")  # fmt: skip
    gemm_rt = sorted((k.features["m"], k.features["k"], k.features["nn"]) for k in rt
                     if k.family == "Gemm")  # fmt: skip
    assert gemm_ir == gemm_rt
    # without groups every IR layer is a kernel: the unfused GELU's Erf, Div, Mul... appear
    alone = ir_kernels(g)
    assert len(alone) == len(g.layers) > len(ir)
    assert "com.microsoft.Gelu" not in {k.family for k in alone}
    # a CNN block: one kernel per convolution (its ReLU fused into it), the IR's MACs
    cnn = resolve("block:basic?h=14&c=16")
    ks = ir_kernels(cnn, mapping.groups(cnn))
    convs = [k for k in ks if k.op == "Conv"]
    # (whether the residual Add is fused too depends on the CPU's blocked layout)
    assert len(convs) == sum(la.op == "Conv" for la in cnn.layers) <= len(ks) < len(cnn.layers)
    assert sum(k.features["macs"] for k in convs) == sum(la.macs for la in cnn.layers)


def test_runtime_conv_kernels_count_the_ir_macs():
    ref = "block:basic?h=14&c=16"
    ks = runtime_kernels(ref)
    convs = [k for k in ks if "Conv" in k.op]
    assert len(convs) == 3 and all(k.op == "com.microsoft.nchwc.Conv" for k in convs)
    ir = sum(la.macs for la in resolve(ref).layers if la.op == "Conv")
    assert sum(k.features["macs"] for k in convs) == ir
    assert any(k.features["has_sum"] for k in convs)  # the residual Add fused into the conv
    # the IR fallback (no runtime) still gives one costed kernel per layer
    fallback = ir_kernels(resolve(ref))
    assert sum(k.features["macs"] for k in fallback) == ir


# --------------------------------------------------------------------------- suite + predictor


@pytest.fixture(scope="module")
def kernel_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("kernel") / "bench.db"
    store = Store(str(path))
    res = run_bench("context", store, "cpu", references=TINY, profile_runs=5)
    store.close()
    assert not res.failed, res.failed
    return path


def test_context_suite_stores_kernels_with_features(kernel_store):
    store = Store(str(kernel_store))
    rows = kernel_rows(store, "cpu")
    again = run_bench("context", store, "cpu", references=TINY[:2])
    store.close()
    assert set(rows["network"]) == set(TINY)
    assert (rows["time_us"] > 0).all()
    assert {"Gemm", "com.microsoft.nchwc.Conv"} <= set(rows["family"])
    # each kernel names its node in the optimised graph, as the predictor's per-kernel table
    # does (what per-kernel comparisons match on), unique within a network
    named = rows[rows["node"] != ""]
    assert len(named) > 0.5 * len(rows)
    assert not named.duplicated(["network", "node"]).any()
    profiled = set(named[named["network"] == TINY[0]]["node"])
    assert profiled and profiled <= {k.name for k in runtime_kernels(TINY[0])}
    assert again.skipped == TINY[:2] and not again.measured  # resumable


def test_adaptive_sampling_prefers_what_the_data_leave_uncertain(kernel_store):
    store = Store(str(kernel_store))
    rows = kernel_rows(store, "cpu")
    store.close()
    seen = TINY[5]  # measured: its kernels are well covered
    new = "block:unet?c=16&h=32&up=convt"  # ConvTranspose, Concat, MaxPool: never profiled
    scores = candidate_scores([seen, new], rows.to_dict(orient="records"), rows["time_us"])
    assert np.all(np.isfinite(scores)) and scores[1] > scores[0]


def test_kernel_predictor_fits_from_the_store(kernel_store, tmp_path):
    store = Store(str(kernel_store))
    table = store.export_table()
    store.close()
    nets, y = list(table["network"]), table["cpu"].to_numpy(dtype=float)
    model = make_predictor(
        "kernel",
        store=str(kernel_store),
        device="cpu",
        min_points=4,
        n_estimators=20,
        model="trees",
    )
    model.fit(nets, y)
    pred = model.predict(nets)
    assert np.all(np.isfinite(pred)) and np.all(pred > 0)
    # in-sample the sum of kernels plus the fitted overhead lands near the measured latency
    assert float(np.median(np.abs(pred - y) / y)) < 0.5
    per = model.predict_layers([TINY[0]])
    kernels = per["predicted_ms"].sum()
    total = model.scale_ * kernels + model.per_kernel_ms_ * len(per) + model.overhead_ms_
    assert model.predict([TINY[0]])[0] == pytest.approx(max(total, 0.5 * kernels))
    model.save(tmp_path / "k")
    again = load_predictor(tmp_path / "k")
    np.testing.assert_allclose(again.predict(nets), pred, rtol=1e-9)
    # the IR path (no runtime): the mapping model fitted with the predictor groups the layers
    # into the kernels the runtime runs, and the predictor costs them as it costs those
    assert again.mapping_ is not None
    ir = ir_kernels_mapped(resolve(TINY[0]), again.mapping_)
    rt = runtime_kernels(TINY[0])
    assert Counter(k.family for k in ir) == Counter(k.family for k in rt)
    p_ir = again._kernel_ms(ir)[0].sum()
    p_rt = again._kernel_ms(rt)[0].sum()
    assert p_ir == pytest.approx(p_rt, rel=0.1)
    # one-row products never profiled (no classifier here): the unsplit family's model, as a
    # bundle fitted before the /gemv split predicts them
    assert "Gemm/gemv" not in model.counts_
    assert model._family_for("Gemm/gemv") == model._family_for("Gemm") == "Gemm"
    # a network with a kernel family never profiled: costed by the roofline, reported
    odd = "block:dense?h=7&c=16&gr=8&n=2"
    missing = model.uncovered([odd])[0]
    assert "AveragePool" in " ".join(missing)
    assert model.predict([odd])[0] > 0


def test_overhead_fit_bounds_the_per_kernel_term_at_the_profilers_cost():
    from latlab.predictors.kernel import PROFILER_NODE_MS, fit_overhead

    n = np.array([5.0, 10, 50, 100, 200, 400])
    s = np.array([1.0, 2, 5, 10, 15, 30])
    a, c, o = fit_overhead(s - 0.01 * n + 0.2, s, n)  # least squares would give -10 us
    assert c >= -PROFILER_NODE_MS - 1e-12 and o >= 0 and 0.5 <= a <= 2
    a, c, o = fit_overhead(s - 0.002 * n + 0.2, s, n)  # the profiler's own cost is removed
    assert c == pytest.approx(-0.002, rel=0.1) and a == pytest.approx(1.0, rel=0.02)
    a, c, o = fit_overhead(1.1 * s + 0.005 * n + 0.1, s, n)  # a real per-kernel cost is kept
    assert a == pytest.approx(1.1, rel=0.02) and c == pytest.approx(0.005, rel=0.1)
    assert o == pytest.approx(0.1, abs=0.02)


def test_family_model_is_chosen_by_grouped_cross_validation():
    rng = np.random.default_rng(0)
    flops = rng.uniform(1e5, 1e8, 80)
    feats = [{"flops": f, "macs": f / 2, "out_elems": 1e3, "c": c}
             for f, c in zip(flops, rng.integers(0, 2, 80), strict=True)]  # fmt: skip
    base = 2.0 + flops / 5e4
    # linear cost with pure noise: no correction can help, the linear model is kept
    noisy = base * np.exp(rng.normal(0, 0.05, 80))
    model, cv = fit_family(feats, noisy, np.arange(80) % 10, seed=0, n_estimators=20)
    assert set(cv) == {"linear", "trees", "gbm"} and model.kind == "linear"
    assert cv["linear"] < 0.06
    # a feature-dependent efficiency (channels on/off a block) the linear cost cannot see
    skewed = base * np.where([f["c"] for f in feats], 2.0, 1.0)
    model, cv = fit_family(feats, skewed, np.arange(80) % 10, seed=0, n_estimators=50)
    assert model.kind in ("trees", "gbm") and cv[model.kind] < 0.5 * cv["linear"]
    pred = model.predict_us(feats)
    assert float(np.median(np.abs(pred - skewed) / skewed)) < 0.05


def test_one_row_products_of_a_weight_matrix_are_their_own_family():
    """A batch-1 classifier streams its weights once (memory-bound); the token GEMMs of the
    same op are compute-bound: modelled apart, and a fused epilogue finds the plain one."""
    (fc,) = [k for k in runtime_kernels("kernel:fc?c=512&f=1000") if "Gemm" in k.op]
    (tok,) = [k for k in runtime_kernels("kernel:linear?t=64&c=256&f=256") if "Gemm" in k.op]
    assert model_family(fc.family, fc.features) == f"{fc.family}/gemv"
    assert model_family(tok.family, tok.features) == tok.family
    assert base_family("com.microsoft.FusedGemm/gemv") == "Gemm/gemv"
    # activation-by-activation products and convolutions are never split
    assert model_family("MatMul/act", {"m": 1, "batch": 1, "b_weight": 0}) == "MatMul/act"
    assert model_family("Conv", {"m": 1, "batch": 1, "b_weight": 1}) == "Conv"


def test_kernel_predictor_needs_a_store():
    with pytest.raises(DataError, match="bench store"):
        make_predictor("kernel").fit(TINY[:3], [1.0, 2.0, 3.0])


def test_train_and_predict_kernel_from_the_cli(kernel_store, tmp_path, capsys):
    out = tmp_path / "bundle"
    code, _, err = run_cli(
        ["train", "--data", str(kernel_store), "--target", "cpu", "--predictor", "kernel",
         "--param", "min_points=4", "--param", "model=linear", "--conformal", "none",
         "--val-size", "0", "--test-size", "0", "--out", str(out), "--no-mlflow"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    code, text, err = run_cli(
        ["predict", "--bundle", str(out), "block:dense?h=7&c=16&gr=8&n=2", "--json", "--layers",
         "--no-mlflow"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    rec = json.loads(text)[0]
    assert rec["uncovered"] is True and rec["uncovered_kernels"]
    assert rec["latency_ms"] > 0 and len(rec["kernels"]) >= 5
    code, text, _ = run_cli(
        ["predict", "--bundle", str(out), TINY[0], "--layers", "--no-mlflow"], capsys
    )
    assert code == 0 and "Gemm" in text and "predicted ms" in text
