"""Precision as part of a device configuration: INT8 quantisation (real onnxruntime on tiny
networks), mixed precision reported, precision in device names and the protocol, bad input."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from cli_helpers import run_cli
from latlab.datasets.bench.kernels_quant import executed_precision
from latlab.datasets.bench.kernels_runtime import runtime_kernels
from latlab.datasets.measure import MeasureConfig, default_device_name, measure
from latlab.datasets.references import onnx_model, resolve
from latlab.encoders import quantize
from latlab.encoders.quantize import PrecisionError, at_precision, qdq_report
from latlab.errors import DataError, MeasurementError
from latlab.predictors.precision import GROUPS, float_family, kernel_class, kernel_group

NET = "cnn:r32-c8s2-rb8-c16s2-fc10"
QUICK = ["--repeats", "5", "--time-budget", "0.05", "--no-reference"]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    """Quantised models cached in the test's own folder, memory cache empty."""
    monkeypatch.setenv("LATLAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(quantize, "_MEMORY", type(quantize._MEMORY)())


def test_int8_model_is_qdq_runs_and_executes_quantised_kernels(tmp_path):
    model = onnx_model(NET, precision="int8")
    ops = Counter(n.op_type for n in model.graph.node)
    assert ops["QuantizeLinear"] >= 1 and ops["DequantizeLinear"] >= 4
    report = qdq_report(model)
    assert report.label == "int8" and report.int8_mac_fraction == 1.0
    assert report.macs == pytest.approx(resolve(NET).totals.macs, rel=0.02)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    (y,) = session.run(None, {session.get_inputs()[0].name: x})
    assert y.shape == (1, 10) and np.isfinite(y).all()
    # what onnxruntime executes: quantised kernels, weights at one byte an element
    k8 = runtime_kernels(NET, precision="int8")
    k32 = runtime_kernels(NET)
    fams = Counter(k.family for k in k8)
    assert fams["com.microsoft.QLinearConv"] >= 3 and fams["com.microsoft.QGemm"] == 1
    q_conv = [k for k in k8 if k.family == "com.microsoft.QLinearConv"]
    assert all(k.features["bytes_w"] < 1.1 * k.features["w_elems"] for k in q_conv)
    # NHWC shapes read back as NCHW: the executed int8 MACs are the network's (the float
    # NCHWc kernels pad channels to the block size, so theirs are more)
    conv_macs = sum(la.macs for la in resolve(NET).layers if la.op == "Conv")
    assert sum(k.features["macs"] for k in q_conv) == conv_macs
    assert sum(k.features["macs"] for k in k32 if "Conv" in k.op) >= conv_macs
    assert executed_precision(NET)["label"] == "int8"
    assert kernel_class("com.microsoft.QLinearConv/dw") == "dwconv"


@pytest.mark.parametrize(
    ("int8", "fp32", "group"),
    [
        ("com.microsoft.QLinearConv/dw", "com.microsoft.nchwc.Conv/dw", "dwconv"),
        ("com.microsoft.QGemm", "Gemm", "matmul"),
        ("QLinearMatMul/act", "com.microsoft.FusedMatMul/act", "matmul/act"),
        ("com.microsoft.QLinearSoftmax", "Softmax", "softmax"),
        ("LayerNormalization", "com.microsoft.SkipLayerNormalization", "norm"),
        ("com.microsoft.NhwcMaxPool", "com.microsoft.nchwc.MaxPool", "pool"),
        ("com.microsoft.QLinearConcat", "Concat", "layout"),
        ("com.microsoft.QLinearAdd", "Add", "elementwise"),
    ],
)
def test_an_int8_kernel_and_its_float_op_fall_in_one_group(int8, fp32, group):
    assert kernel_group(int8) == kernel_group(fp32) == kernel_group(float_family(int8)) == group
    assert (
        kernel_group("QuantizeLinear") == "qdq"
        and float_family("QuantizeLinear") == "QuantizeLinear"
    )


def test_quantised_models_are_cached_by_content(tmp_path):
    first = onnx_model(NET, precision="int8").SerializeToString()
    files = list((tmp_path / "cache" / "quantized").glob("*.onnx"))
    assert len(files) == 1
    quantize._MEMORY.clear()
    assert onnx_model(NET, precision="int8").SerializeToString() == first  # read from disk
    onnx_model("cnn:r32-c8s2-c16-fc10", precision="int8")
    assert len(list((tmp_path / "cache" / "quantized").glob("*.onnx"))) == 2


def _conv_then_deconv(path):
    """Conv (onnxruntime runs it as QLinearConv) then ConvTranspose (quantised in the QDQ
    graph, but onnxruntime has no int8 kernel for it and runs DQ -> float -> Q)."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((8, 4, 2, 2)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["b"], name="relu"),
        helper.make_node("ConvTranspose", ["b", "w2"], ["y"], name="deconv", strides=[2, 2]),
    ]
    graph = helper.make_graph(
        nodes,
        "mixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 32, 32])],
        [w1, w2],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    conv_macs = 8 * 16 * 16 * 3 * 3 * 3
    deconv_macs = 8 * 16 * 16 * 4 * 2 * 2
    return conv_macs / (conv_macs + deconv_macs)


def test_a_network_not_fully_quantised_is_measured_and_reported_mixed(tmp_path):
    frac = _conv_then_deconv(tmp_path / "mixed.onnx")
    ref = f"onnx:{tmp_path / 'mixed.onnx'}"
    executed = executed_precision(ref)
    assert executed["label"] == "mixed"
    assert executed["int8_mac_fraction"] == pytest.approx(frac, rel=1e-6)
    assert executed["float_kernels"] == {"ConvTranspose": 1}
    m = measure(ref, MeasureConfig(precision="int8", repeats=5, min_repeats=3,
                                   time_budget_s=0.05))  # fmt: skip
    prec = m.backend_info["precision"]
    assert prec["label"] == "mixed"  # never labelled int8 although the QDQ graph is all int8
    assert prec["graph"]["label"] == "int8"
    assert m.protocol["precision"] == "int8" and m.median_ms > 0


def test_precision_in_device_names_and_protocol():
    fp = {"cpu_model": "AMD EPYC 9454", "physical_cores": 2}
    base = default_device_name("onnxruntime", 1, fp)
    assert default_device_name("onnxruntime", 1, fp, precision="fp32") == base
    assert default_device_name("onnxruntime", 2, fp, batch=8, precision="int8") == (
        base + "-2t-b8-int8"
    )
    fp32, int8 = MeasureConfig(), MeasureConfig(precision="int8")
    assert "precision" not in fp32.protocol() and "precision" not in fp32.settings()
    assert MeasureConfig(precision="fp32").protocol_key() == fp32.protocol_key()
    assert int8.protocol()["precision"] == "int8" and int8.settings()["precision"] == "int8"
    assert int8.protocol_key() != fp32.protocol_key()
    assert int8.settings_key() != fp32.settings_key()
    with pytest.raises(MeasurementError, match="precision='int4'"):
        MeasureConfig(precision="int4")


def test_device_name_precision_suffix_is_parsed_by_one_helper():
    from latlab.datasets.measure import split_precision, with_precision

    fp = {"cpu_model": "AMD EPYC 9454", "physical_cores": 2}
    base = default_device_name("onnxruntime", 1, fp)
    for precision in quantize.PRECISIONS:  # the inverse of what default_device_name appends
        name = default_device_name("onnxruntime", 4, fp, batch=8, precision=precision)
        assert split_precision(name) == (default_device_name("onnxruntime", 4, fp, batch=8),
                                         precision)  # fmt: skip
        assert with_precision(split_precision(name)[0], precision) == name
    assert split_precision(base) == (base, "fp32")
    assert split_precision("-int8") == ("-int8", "fp32")  # a suffix alone names no sibling
    with pytest.raises(PrecisionError, match="int4"):
        with_precision(base, "int4")


@pytest.mark.parametrize("precision", ["int8", "bf16"])
def test_cross_precision_finds_the_fp32_device_of_any_precision_suffix(tmp_path, precision):
    from latlab.datasets.store import Store
    from latlab.predictors import make_predictor

    db = str(tmp_path / "empty.db")
    Store(db).close()
    cross = make_predictor("cross-precision", store=db, device=f"cpu-{precision}")
    # the source is the FP32 sibling "cpu": the error is about its missing data, not the name
    with pytest.raises(DataError, match="'cpu'") as err:
        cross.fit(INT8_NETS, [1.0] * len(INT8_NETS))
    assert "source_device" not in str(err.value)
    with pytest.raises(DataError, match="source_device"):
        make_predictor("cross-precision", store=db, device="cpu").fit(INT8_NETS, [1.0] * 4)


def test_ir_at_precision_counts_bytes_not_macs():
    g = resolve(NET)
    q = at_precision(g, "int8")
    b = at_precision(g, "bf16")
    assert q.totals.macs == g.totals.macs
    assert q.totals.weight_bytes * 4 == pytest.approx(g.totals.weight_bytes, abs=8)
    assert q.totals.bytes_read * 4 == g.totals.bytes_read
    assert b.totals.bytes_written * 2 == g.totals.bytes_written
    assert q.meta["precision"] == "int8" and at_precision(g, "fp32") is g


def test_qdq_ir_counts_data_movement_and_int8_kernels_at_one_byte():
    import math

    from latlab.encoders.onnx_import import from_onnx

    ref = "block:transformer?d=64&h=2&s=16"
    q = from_onnx(onnx_model(ref, precision="int8"))
    f = from_onnx(onnx_model(ref))
    by = {op: [la for la in q.layers if la.op == op] for op in ("Transpose", "Reshape", "Gemm",
          "LayerNormalization", "Erf", "Softmax")}  # fmt: skip
    assert all(by.values()), {k: len(v) for k, v in by.items()}
    for op in ("Transpose", "Reshape", "Gemm", "Softmax"):  # int8 between the QDQ pairs
        for la in by[op]:
            n_in = sum(math.prod(s) for s in la.input_shapes)
            assert la.act_bits == 8 and la.bytes_read == n_in, (op, la.bytes_read, n_in)
    for op in ("LayerNormalization", "Erf"):  # float between DequantizeLinear and QuantizeLinear
        assert all(la.act_bits == 32 for la in by[op])
    moves = [la for la in f.layers if la.op in ("Transpose", "Reshape")]
    assert moves and all(la.bytes_read == 4 * math.prod(la.input_shapes[0]) for la in moves)
    assert all(la.act_bits == 32 for la in f.layers)  # the float model is unchanged
    # the widths are the file's own: at_precision keeps them (LayerNormalization/Erf stay
    # float) and refuses a precision the file does not have
    assert q.meta["quantized"] is True and q.meta["precision"] == "int8"
    assert "quantized" not in f.meta and "precision" not in f.meta
    again = at_precision(q, "int8")
    assert [(la.weight_bits, la.act_bits, la.bytes_read) for la in again.layers] == [
        (la.weight_bits, la.act_bits, la.bytes_read) for la in q.layers
    ]
    assert {la.act_bits for la in again.layers if la.op in ("LayerNormalization", "Erf")} == {32}
    with pytest.raises(PrecisionError, match=r"quantised .*at int8.* bf16"):
        at_precision(q, "bf16")
    assert at_precision(f, "int8").meta["precision"] == "int8"  # a float graph is converted


def test_bf16_on_torch_and_int8_refused_there():
    m = measure(NET, MeasureConfig(backend="torch", precision="bf16", repeats=5,
                                   min_repeats=3, time_budget_s=0.05))  # fmt: skip
    assert m.backend_info["precision"]["label"] == "bf16" and m.median_ms > 0
    with pytest.raises(PrecisionError, match="--backend onnxruntime"):
        measure(NET, MeasureConfig(backend="torch", precision="int8"))
    with pytest.raises(PrecisionError, match="no bfloat16"):
        onnx_model(NET, precision="bf16")


def test_cli_measure_int8_column(tmp_path, capsys):
    db = tmp_path / "m.db"
    code, out, err = run_cli(
        ["measure", NET, "--precision", "int8", "--db", str(db), *QUICK], capsys
    )
    assert code == 0, err
    device = default_device_name("onnxruntime", precision="int8")
    assert device.endswith("-int8") and device in out


def test_cli_measure_bf16_runs_on_torch_in_its_own_column(tmp_path, capsys):
    import sqlalchemy as sa

    from latlab.datasets.store import Store

    db = tmp_path / "m.db"
    argv = ["measure", NET, "--precision", "bf16", "--backend", "torch", "--db", str(db), *QUICK]
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    device = default_device_name("torch", precision="bf16")
    assert device.endswith("-bf16") and device in out
    st = Store(str(db))
    table = st.export_table(devices=[device]).set_index("network")
    assert table.loc[NET, device] > 0
    with st.engine.connect() as c:
        info = [r[0] for r in c.execute(sa.text("SELECT backend_info FROM measurements"))]
    st.close()
    assert len(info) == 1 and '"bf16"' in str(info[0])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["measure", NET, "--precision", "int4"], "unknown --precision 'int4'"),
        (["measure", NET, "--precision", "bf16"], "needs --backend torch"),
        (["measure", NET, "--precision", "int8", "--backend", "torch"], "--backend onnxruntime"),
        (["bench", "--precision", "int4"], "unknown --precision 'int4'"),
        (["bench", "--precision", "int8", "--suite", "padding"], "kernels, multilayer, context"),
    ],
)
def test_cli_bad_precision_one_line_before_work(tmp_path, capsys, argv, message):
    db = tmp_path / "x.db"
    code, _, err = run_cli([*argv, "--db", str(db)], capsys)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert not db.exists()


@pytest.mark.parametrize("method", [[], ["--method", "padded"]])
def test_cli_int8_export_refuses_the_padded_method_before_work(tmp_path, capsys, method):
    db, table = tmp_path / "x.db", tmp_path / "t.csv"
    code, _, err = run_cli(["bench", "--precision", "int8", "--export", str(table), *method,
                            "--db", str(db)], capsys)  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--method padded has no int8 table" in err and "--method single" in err
    assert not db.exists() and not table.exists()
    # an export of the int8 tables alone (no suite) is a valid command
    code, _, err = run_cli(["bench", "--precision", "int8", "--export", str(table), "--method",
                            "single", "--db", str(db)], capsys)  # fmt: skip
    assert "benchmarks the suites" not in err


def test_cli_quantize_writes_the_model_and_reports_mixed(tmp_path, capsys):
    import json

    out = tmp_path / "q" / "net.onnx"
    code, stdout, err = run_cli(["quantize", NET, "--out", str(out), "--json"], capsys)
    assert code == 0, err
    (row,) = json.loads(stdout)
    assert row["label"] == "int8" and row["executed"]["int8_mac_fraction"] == 1.0
    assert Counter(n.op_type for n in onnx.load(out).graph.node)["QuantizeLinear"] >= 1
    frac = _conv_then_deconv(tmp_path / "mixed.onnx")
    code, stdout, _ = run_cli(["quantize", f"onnx:{tmp_path / 'mixed.onnx'}", "--json"], capsys)
    (row,) = json.loads(stdout)
    assert code == 0 and row["label"] == "mixed"
    assert row["executed"]["int8_mac_fraction"] == pytest.approx(frac, rel=1e-6)
    code, _, err = run_cli(["quantize", NET, "--out", str(tmp_path / "x.csv")], capsys)
    assert code == 2 and "use .onnx" in err and not (tmp_path / "x.csv").exists()


INT8_NETS = [
    "block:basic?c=16&h=14",
    "block:basic?c=32&f=64&h=14&s=2",
    "block:mbconv?c=16&e=3&h=14&se=1",
    "block:transformer?d=64&h=2&s=16",
]


def test_int8_bench_and_kernel_predictor_predict_the_quantised_network(tmp_path):
    from dataclasses import replace

    from latlab.datasets.bench.campaign import BENCH_CONFIG, run_bench
    from latlab.datasets.bench.export import kernel_rows
    from latlab.datasets.store import Store
    from latlab.predictors import load_predictor, make_predictor

    db = str(tmp_path / "bench.db")
    store = Store(db)
    cfg = replace(BENCH_CONFIG, precision="int8", time_budget_s=0.1, max_warmup_s=0.1)
    res = run_bench("context", store, "cpu-int8", references=INT8_NETS, config=cfg,
                    profile_runs=5)  # fmt: skip
    assert not res.failed, res.failed
    rows = kernel_rows(store, "cpu-int8")
    table = store.export_table(devices=["cpu-int8"], protocol=cfg)
    store.close()
    assert {"com.microsoft.QLinearConv", "com.microsoft.QGemm"} <= set(rows["family"])
    assert "com.microsoft.nchwc.Conv" not in set(rows["family"])  # nothing ran in float
    model = make_predictor("kernel", store=db, device="cpu-int8", min_points=3,
                           n_estimators=20, model="linear")  # fmt: skip
    model.fit(list(table["network"]), table["cpu-int8"].to_numpy(dtype=float))
    assert model.precision_ == "int8"
    # an explicit precision may confirm the store's, never contradict it
    nets, lat = list(table["network"]), table["cpu-int8"].to_numpy(dtype=float)
    same = make_predictor("kernel", store=db, device="cpu-int8", precision="int8", min_points=3,
                          n_estimators=20, model="linear", mapping_networks=0)  # fmt: skip
    assert same.fit(nets, lat).precision_ == "int8"
    wrong = make_predictor("kernel", store=db, device="cpu-int8", precision="fp32", min_points=3,
                           n_estimators=20, model="linear", mapping_networks=0)  # fmt: skip
    with pytest.raises(DataError, match=r"precision='fp32' contradicts .*'cpu-int8'.* 'int8'"):
        wrong.fit(nets, lat)
    per = model.predict_layers(["block:basic?c=16&f=32&h=14"])  # never profiled
    assert "com.microsoft.QLinearConv" in set(per["family"])
    assert per.loc[per["family"] == "com.microsoft.QLinearConv", "covered"].all()
    model.save(tmp_path / "k8")
    again = load_predictor(tmp_path / "k8")
    assert again.precision_ == "int8"
    np.testing.assert_allclose(again.predict(INT8_NETS), model.predict(INT8_NETS), rtol=1e-9)
    assert np.all(model.predict(INT8_NETS) > 0)
    # cross-precision: the FP32 kernel data of the same networks plus their INT8 ones
    store = Store(db)
    fp = replace(cfg, precision="fp32")
    assert not run_bench("context", store, "cpu", references=INT8_NETS, config=fp,
                         profile_runs=5).failed  # fmt: skip
    store.close()
    cross = make_predictor("cross-precision", store=db, device="cpu-int8", min_points=3,
                           model="linear")  # fmt: skip
    cross.fit(list(table["network"]), table["cpu-int8"].to_numpy(dtype=float))
    sp = cross.speedups()
    assert {"all", "conv", "matmul", "qdq"} <= set(sp) <= {"all", *GROUPS} and sp["conv"] > 0.5
    pred = cross.predict(INT8_NETS)
    # kernels no INT8 family model covers are the FP32 model's float op times the group ratio
    per = cross.predict_layers(["block:mbconv?c=16&h=14&k=5"])  # never profiled
    prior = per[per["model"] == "prior"]
    assert len(prior) and not prior["covered"].any() and (prior["predicted_ms"] > 0).all()
    ks = [k for k in runtime_kernels("block:mbconv?c=16&h=14&k=5", precision="int8")
          if k.index in set(prior["kernel"])]  # fmt: skip
    np.testing.assert_allclose(sorted(cross.prior_(ks)), sorted(prior["predicted_ms"]), rtol=1e-9)
    assert np.all(pred > 0) and np.all(cross.predict_fp32(INT8_NETS) > 0)
    cross.save(tmp_path / "x8")
    np.testing.assert_allclose(load_predictor(tmp_path / "x8").predict(INT8_NETS), pred,
                               rtol=1e-9)  # fmt: skip
    with pytest.raises(DataError, match="source_device"):
        make_predictor("cross-precision", store=db, device="cpu").fit(INT8_NETS, [1.0] * 4)


INT8_KERNELS = [
    "kernel:conv?c=16&f=32&h=14&k=3&s=1",
    "kernel:dwconv?c=32&h=14&k=3&s=1",
    "kernel:fc?c=256&f=128",
    "kernel:linear?c=64&f=128&t=32",
    "kernel:bmm?c=16&h=2&t=32",
    "kernel:ln?c=64&t=32",
    "kernel:gelu?c=128&t=32",
]


def test_int8_kernels_suite_profiles_the_quantised_kernels_of_every_family(tmp_path):
    from dataclasses import replace

    from latlab.datasets.bench.campaign import BENCH_CONFIG, run_bench
    from latlab.datasets.bench.export import kernel_rows
    from latlab.datasets.bench.tables import BenchStore
    from latlab.datasets.store import Store
    from latlab.predictors import make_predictor

    db = str(tmp_path / "bench.db")
    store = Store(db)
    cfg = replace(BENCH_CONFIG, precision="int8", time_budget_s=0.05, max_warmup_s=0.05)
    res = run_bench("kernels", store, "cpu-int8", references=INT8_KERNELS, config=cfg,
                    profile_runs=5)  # fmt: skip
    assert not res.failed, res.failed
    rows = kernel_rows(store, "cpu-int8")
    fams = set(rows["family"])
    # int8 convolutions (dense and depthwise), QGemm for the 2-D Gemm and the token MatMul,
    # QLinearMatMul for the batched activation matmul, the float ops left between QDQ pairs
    # and the conversions around them
    assert {"com.microsoft.QLinearConv", "com.microsoft.QLinearConv/dw", "com.microsoft.QGemm",
            "QLinearMatMul/act", "LayerNormalization", "Erf", "QuantizeLinear",
            "DequantizeLinear"} <= fams, fams  # fmt: skip
    qgemm = rows[rows["family"] == "com.microsoft.QGemm"]
    assert set(qgemm["network"]) == {res.references[2], res.references[3]}
    conv = rows[rows["family"] == "com.microsoft.QLinearConv"].iloc[0]["features"]
    assert conv["bytes_w"] == 16 * 32 * 9  # one byte a weight
    assert not any(f.startswith("com.microsoft.nchwc") for f in fams)  # nothing in float conv
    lb = BenchStore(store).layer_benchmarks("cpu-int8")
    assert set(lb["suite"]) == {"kernels"} and "conv" in set(lb["kind"])
    profs = BenchStore(store).profiles("cpu-int8")
    assert {s["precision"] for s in profs["settings"]} == {"int8"}
    # resumable: a second run measures nothing
    again = run_bench("kernels", store, "cpu-int8", references=INT8_KERNELS, config=cfg,
                      profile_runs=5)  # fmt: skip
    assert not again.measured and len(again.skipped) == len(INT8_KERNELS)
    with pytest.raises(DataError, match="fp32 only"):
        run_bench("padding", store, "cpu-int8", references=INT8_KERNELS[:1], config=cfg)
    table = store.export_table(devices=["cpu-int8"], protocol=cfg)
    store.close()
    model = make_predictor("kernel", store=db, device="cpu-int8", min_points=1,
                           n_estimators=10, model="linear", mapping_networks=0)  # fmt: skip
    model.fit(list(table["network"]), table["cpu-int8"].to_numpy(dtype=float))
    assert model.precision_ == "int8"
    assert {"com.microsoft.QLinearConv", "QLinearMatMul/act"} <= set(model.families_)
    # families under min_points but with 3+ kernels get their own linear cost, not the pooled
    # fallback; single-kernel families (one QLinearConv here) fall back and say so
    few = make_predictor("kernel", store=db, device="cpu-int8", min_points=50,
                         n_estimators=10, mapping_networks=0)  # fmt: skip
    few.fit(list(table["network"]), table["cpu-int8"].to_numpy(dtype=float))
    n_q = few.counts_["QuantizeLinear"]
    assert 3 <= n_q < 50 and few.families_["QuantizeLinear"].kind == "linear"
    per = few.predict_layers([res.references[0]])
    by = per.set_index("family")
    assert bool(by.loc["QuantizeLinear", "covered"])
    assert "QuantizeLinear:linear" in set(per["model"])
    assert not bool(by.loc["com.microsoft.QLinearConv", "covered"])


def test_cli_measure_says_which_networks_run_mixed(tmp_path, capsys):
    frac = _conv_then_deconv(tmp_path / "mixed.onnx")
    ref = f"onnx:{tmp_path / 'mixed.onnx'}"
    code, _, err = run_cli(
        ["measure", ref, NET, "--precision", "int8", "--db", str(tmp_path / "m.db"), *QUICK],
        capsys,
    )
    assert code == 0, err
    lines = [ln for ln in err.splitlines() if "mixed precision:" in ln]
    assert len(lines) == 1 and "mixed.onnx" in lines[0]  # the all-int8 network is not named
    assert f"{100 * frac:.1f} % of counted MACs in int8 kernels" in lines[0]
    assert "float kernels: ConvTranspose x1" in lines[0]  # the culprit is named


def test_precision_experiment_kernel_benchmarks_cover_every_type_within_the_cap():
    from latlab.datasets.bench.kernels import resolve_kernel
    from latlab.experiments.precision import KERNEL_MAX_FLOPS, KERNEL_TYPES, kernel_networks

    by_type = kernel_networks(36, 0)
    assert by_type == kernel_networks(36, 0) and list(by_type) == list(KERNEL_TYPES)
    refs = [r for t in KERNEL_TYPES for r in by_type[t]]
    assert len(set(refs)) == 36 and all(len(v) == 3 for v in by_type.values())
    assert all(resolve_kernel(r)[1].totals.flops <= KERNEL_MAX_FLOPS for r in refs)
    # grouped convolutions (named after their chain, conv+relu) are grouped
    assert all("g=" in r and not r.endswith("g=1") for r in by_type["gconv"])
    assert kernel_networks(0, 0) == {}


def test_paired_samples_run_at_the_configured_precision():
    from dataclasses import replace

    from latlab.datasets.bench.campaign import BENCH_CONFIG, padded_references, paired_samples

    pad_x = padded_references(INT8_KERNELS[0])[1]
    cfg = replace(BENCH_CONFIG, precision="int8", repeats=6, min_repeats=3, time_budget_s=0.05,
                  max_warmup_s=0.05)  # fmt: skip
    samples = paired_samples([pad_x], cfg)
    assert len(samples) == 1 and len(samples[0]) >= 3 and np.all(samples[0] > 0)
    # the model of the rounds is the quantised one (what the configuration is stored under)
    key = quantize.content_key(onnx_model(pad_x).SerializeToString())
    assert [f.stem for f in quantize.cache_dir().glob("*.onnx")] == [key]


def test_train_takes_the_layerwise_precision_from_the_target_column(tmp_path, capsys):
    from latlab.datasets.bench.kernels import canonical
    from latlab.training.bundle import load_bundle

    db = str(tmp_path / "m.db")
    refs = [f"kernel:conv?c={c}&h={h}&f=16&k=3" for c in (8, 16, 32) for h in (8, 14)] + [
        f"kernel:fc?c={c}&f=10" for c in (64, 128, 256, 512)
    ]  # single-layer benchmarks measured at int8: what the layer-wise predictors train on
    refs = [canonical(r) for r in refs]
    code, _, err = run_cli(["measure", *refs, "--precision", "int8", "--device-name", "cpu-int8",
                            "--db", db, *QUICK], capsys)  # fmt: skip
    assert code == 0, err
    common = ["--target", "cpu-int8", "--predictor", "roofline", "--val-size", "3",
              "--conformal", "none", "--no-mlflow", "--param", 'mapping="none"']  # fmt: skip
    code, _, err = run_cli(["train", "--data", db, *common, "--out", str(tmp_path / "a")], capsys)
    assert code == 0, err
    assert load_bundle(tmp_path / "a").manifest["predictor"]["params"]["precision"] == "int8"
    # --param precision wins over the column's name
    code, _, err = run_cli(["train", "--data", db, *common, "--param", 'precision="fp32"',
                            "--out", str(tmp_path / "b")], capsys)  # fmt: skip
    assert code == 0, err
    assert load_bundle(tmp_path / "b").manifest["predictor"]["params"]["precision"] == "fp32"


def test_cross_precision_variants_benchmark_refuses_a_store_it_cannot_use(tmp_path, capsys):
    import importlib.util

    from latlab.datasets.store import Store

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "cross_precision_variants.py"
    spec = importlib.util.spec_from_file_location("cross_precision_variants", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with pytest.raises(SystemExit) as err:
        mod.main(["--store", str(tmp_path / "none.db")])
    assert err.value.code == 2 and "none.db: no such file" in capsys.readouterr().err
    Store(str(tmp_path / "empty.db")).close()
    with pytest.raises(SystemExit) as err:
        mod.main(["--store", str(tmp_path / "empty.db")])
    assert err.value.code == 2 and "no column 'epyc-2c-ort-int8'" in capsys.readouterr().err
