"""Transformer parts of the ``kernel:`` grammar, their suites, and the layer-wise models on them.

Real onnxruntime sessions and real (tiny, fast) benchmarks; the layer-wise models fitted on
them must predict a real attention network that no benchmark contains.
"""

from __future__ import annotations

import math

import numpy as np
import onnxruntime as ort
import pytest

from latlab.datasets.bench.campaign import run_bench, suite_references
from latlab.datasets.bench.export import training_table
from latlab.datasets.bench.kernels import canonical, parse_kernel, resolve_kernel
from latlab.datasets.bench.suites import (
    MAX_ELEMENTS,
    MAX_FC_WEIGHTS,
    MAX_FLOPS,
    SESSION_PROBE,
    kernel_suite,
    multilayer_suite,
)
from latlab.datasets.bench.trace import runtime_mapping
from latlab.datasets.measure import MeasureConfig, measure
from latlab.datasets.measure.inputs import model_inputs
from latlab.datasets.references import resolve
from latlab.datasets.store import Store
from latlab.datasets.zoo.attention import mlp, self_attention
from latlab.encoders.builder import NetBuilder
from latlab.encoders.onnx_export import to_onnx
from latlab.errors import NetworkReferenceError
from latlab.predictors import make_predictor
from latlab.predictors.layerwise.layer_inputs import group_record, layer_record, model_key

# (reference, IR ops, output shape)
PARTS = [
    ("kernel:linear?t=16&c=32&f=48", ["MatMul", "Add"], (1, 16, 48)),
    ("kernel:bmm?h=2&t=16&c=8", ["MatMul"], (1, 2, 16, 16)),
    ("kernel:bmm?h=2&t=16&c=16&f=8", ["MatMul"], (1, 2, 16, 8)),
    ("kernel:ln?t=16&c=32", ["LayerNormalization"], (1, 16, 32)),
    ("kernel:skipln?t=16&c=32", ["Add", "LayerNormalization"], (1, 16, 32)),
    ("kernel:rmsnorm?t=16&c=32", ["Pow", "ReduceMean", "Add", "Sqrt", "Div", "Mul"], (1, 16, 32)),
    ("kernel:softmax?h=2&t=16&c=16", ["Softmax"], (1, 2, 16, 16)),
    ("kernel:gelu?t=16&c=32", ["Div", "Erf", "Add", "Mul", "Mul"], (1, 16, 32)),
    ("kernel:embed?t=16&c=32&v=100", ["Gather"], (1, 16, 32)),
    ("kernel:heads?t=16&c=32&e=4", ["Reshape", "Transpose"], (1, 4, 16, 8)),
    ("kernel:reshape?t=16&c=32&e=4", ["Reshape"], (1, 16, 4, 8)),
    ("kernel:merge?h=4&t=16&c=8", ["Transpose", "Reshape"], (1, 16, 32)),
    ("kernel:transpose?h=2&t=16&c=8", ["Transpose"], (1, 2, 8, 16)),
    ("kernel:scale?h=2&t=16&c=16", ["Div"], (1, 2, 16, 16)),
]


@pytest.mark.parametrize(("ref", "ops", "shape"), PARTS)
def test_parts_round_trip_and_build_the_layers_they_name(ref, ops, shape) -> None:
    spec, g = resolve_kernel(ref)
    assert spec.reference == ref == canonical(ref)
    # any key order and explicit defaults give the same canonical reference
    body, _, query = ref.partition("?")
    shuffled = f"{body}?{'&'.join(reversed(query.split('&')))}"
    assert canonical(shuffled) == ref
    assert parse_kernel(ref.split(":", 1)[1]) == spec
    assert [la.op for la in g.layers] == ops
    assert g.layers[-1].output_shape == shape


@pytest.mark.parametrize(("ref", "ops", "shape"), PARTS)
def test_parts_run_in_onnxruntime_with_the_ir_shapes(ref, ops, shape) -> None:
    g = resolve(ref)
    model = to_onnx(g)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = model_inputs(model, 1, dict(g.inputs), reference=ref)
    (out,) = sess.run(None, feeds)
    assert out.shape == shape and np.isfinite(out).all()


def test_residual_operand_reads_an_earlier_part() -> None:
    ref = "kernel:padding+add+ln+linear+add(r=2)+padding?t=16&c=32"
    assert canonical(ref) == ref
    g = resolve(ref)
    first, last = g.layers[1], g.layers[-2]
    assert first.op == last.op == "Add" and first.name in last.inputs  # the pre-norm residual
    with pytest.raises(NetworkReferenceError, match="does not come before"):
        resolve("kernel:ln+add(r=3)?t=16&c=32")
    with pytest.raises(NetworkReferenceError, match="is not a"):
        resolve("kernel:linear(f=64)+add(r=1)+padding?t=16&c=32")


def test_malformed_transformer_references_name_the_culprit() -> None:
    for ref, culprit in (
        ("kernel:ln?c=8", "give the tokens t"),
        ("kernel:heads?t=4&c=10&e=3", "must divide the width c=10"),
        ("kernel:padding+embed?t=4&c=8", "embed must be the first part"),
        ("kernel:ln?t=4&c=8&w=3", "w has no meaning"),
        ("kernel:merge?t=4&c=8", "per-head tensor"),
        ("kernel:fc+ln?c=8", "needs a token tensor"),
    ):
        with pytest.raises(NetworkReferenceError, match=culprit) as info:
            resolve(ref)
        assert ref.split("?")[0] in str(info.value)


def test_runtime_fuses_the_transformer_chains_as_the_suite_expects() -> None:
    def nodes(ref: str) -> list[tuple[str, list[str]]]:
        g = resolve(ref)
        return [(n.op, [g.layers[i].op for i in n.layers]) for n in runtime_mapping(g).nodes]

    assert ("Gelu", ["Div", "Erf", "Add", "Mul", "Mul"]) in nodes("kernel:gelu?t=16&c=32")
    rms = ["Pow", "ReduceMean", "Add", "Sqrt", "Div", "Mul"]
    assert ("SimplifiedLayerNormalization", rms) in nodes("kernel:rmsnorm?t=16&c=32")
    skip = nodes("kernel:padding+add+ln+padding?t=16&c=32")
    assert ("SkipLayerNormalization", ["Add", "LayerNormalization"]) in skip
    part = ("SkipLayerNormalization", ["Add", "LayerNormalization"])
    assert part in nodes("kernel:skipln?t=16&c=32")
    assert ("FusedMatMul", ["MatMul", "Div"]) in nodes("kernel:bmm+scale?h=2&t=16&c=8")


def test_model_keys_and_heads_of_transformer_layers() -> None:
    keys = {ref: model_key(resolve(ref).layers[0]) for ref, *_ in PARTS}
    assert keys["kernel:linear?t=16&c=32&f=48"] == "matmul"
    assert keys["kernel:bmm?h=2&t=16&c=8"] == "bmm"
    assert keys["kernel:ln?t=16&c=32"] == "layernorm"
    assert keys["kernel:softmax?h=2&t=16&c=16"] == "softmax"
    assert keys["kernel:embed?t=16&c=32&v=100"] == "embed"
    assert keys["kernel:transpose?h=2&t=16&c=8"] == "transpose"
    assert model_key(resolve("kernel:fc?c=64&f=10").layers[-1]) == "fc"  # CNN Gemm unchanged
    gelu = resolve("kernel:gelu?t=16&c=32")
    head, rec = group_record(gelu.layers, range(5))
    assert gelu.layers[head].op == "Erf" and rec["key"] == "gelu"
    rms = resolve("kernel:rmsnorm?t=16&c=32")
    head, rec = group_record(rms.layers, range(6))
    assert rms.layers[head].op == "ReduceMean" and rec["key"] == "rmsnorm"
    skip = resolve("kernel:padding+add+ln+padding?t=16&c=32")
    head, rec = group_record(skip.layers, [1, 2])
    assert skip.layers[head].op == "LayerNormalization" and rec["key"] == "skiplayernorm"
    alone = resolve("kernel:ln?t=16&c=32")
    assert group_record(alone.layers, [0])[1]["key"] == "layernorm"


def test_roofline_bytes_of_an_embedding_are_the_rows_it_reads() -> None:
    small = layer_record(resolve("kernel:embed?t=64&c=256&v=1000").layers[0])
    large = layer_record(resolve("kernel:embed?t=64&c=256&v=50000").layers[0])
    # ids (64 x 4 bytes) + 64 rows of 256 floats read + the same written, whatever the vocab
    assert small["bytes"] == large["bytes"] == 64 * 4 + 2 * 64 * 256 * 4
    qk = layer_record(resolve("kernel:bmm?h=4&t=32&c=16").layers[0])
    assert qk["num_ops"] == 2 * 4 * 32 * 32 * 16  # 2 x MACs of Q.K^T
    assert qk["bytes"] == 4 * (2 * 4 * 32 * 16 + 4 * 32 * 32)


def test_suites_cover_transformer_kernels_at_real_shapes_within_the_caps() -> None:
    refs = kernel_suite(400, seed=0)
    parts = {r.split(":")[1].split("?")[0] for r in refs}
    assert {"linear", "bmm", "ln", "skipln", "rmsnorm", "softmax", "gelu", "embed", "heads",
            "merge", "transpose", "reshape"} <= parts  # fmt: skip
    tokens, widths = [], []
    for r in refs:
        spec, g = resolve_kernel(r)
        params = dict(spec.params)
        if "t" not in params:
            continue
        tokens.append(params["t"])
        if spec.ops[0] in ("linear", "ln", "embed"):
            widths.append(params["c"])
        assert g.totals.flops <= MAX_FLOPS
        acts = sum(math.prod(s) for la in g.layers for s in (*la.input_shapes, *la.output_shapes))
        assert acts <= MAX_ELEMENTS
        assert sum(math.prod(w) for la in g.layers for w in la.weight_shapes) <= MAX_FC_WEIGHTS
    assert min(tokens) >= 16 and max(tokens) <= 1024 and max(tokens) >= 512
    assert min(widths) >= 64 and max(widths) >= 2048
    # embeddings are measured single (no padding layer produces token ids)
    assert not [r for r in suite_references("padding", 400) if r.startswith("kernel:embed")]
    chains = [r for r in multilayer_suite(64) if "t=" in r]
    assert len(chains) >= 11 and any("+ln+" in r for r in chains)


# --------------------------------------------------------------------------- real benchmarks

# the thread clock: other jobs on a shared machine do not stretch these short timings (the
# accuracy assertions below compare a test-time measurement with benchmarks taken earlier)
FAST = MeasureConfig(repeats=20, min_repeats=5, time_budget_s=0.08, max_warmup=10,
                     max_warmup_s=0.05, timer="thread")  # fmt: skip


def _bench_refs() -> list[str]:
    # the CNN layer types the suites held before (their pooled model is what attention layers
    # fell back to), then the transformer kernels
    refs = [SESSION_PROBE, "kernel:add?c=32&h=16", "kernel:relu?c=32&h=16", "kernel:bn?c=16&h=32"]
    refs += [f"kernel:conv?c=16&h={h}&f={f}&k=3" for f in (16, 32, 64) for h in (8, 16, 28)]
    refs += [f"kernel:fc?c={c}&f=64" for c in (64, 256)]
    for t in (32, 64, 128):
        for d in (64, 128, 256):
            refs += [f"kernel:linear?t={t}&c={d}&f={d}", f"kernel:linear?t={t}&c={d}&f={4 * d}"]
        refs += [
            f"kernel:bmm?h=4&t={t}&c=32",
            f"kernel:bmm?h=4&t={t}&c={t}&f=32",
            f"kernel:softmax?h=4&t={t}&c={t}",
            f"kernel:ln?t={t}&c=128",
            f"kernel:ln?t={t}&c=256",
            f"kernel:skipln?t={t}&c=128",
            f"kernel:skipln?t={t}&c=256",
            f"kernel:gelu?t={t}&c=256",
            f"kernel:gelu?t={t}&c=512",
            f"kernel:heads?t={t}&c=128&e=4",
            f"kernel:merge?h=4&t={t}&c=32",
            f"kernel:transpose?h=4&t={t}&c=32",
            f"kernel:reshape?t={t}&c=128&e=4",
            f"kernel:add?t={t}&c=128",
        ]
    return refs


def _tiny_bert(t: int = 64, d: int = 128, heads: int = 4, layers: int = 2):
    b = NetBuilder("tiny_bert", (1, t, d))
    x = b.input
    for _ in range(layers):
        x = b.layernorm(b.add(x, self_attention(b, x, heads)))
        x = b.layernorm(b.add(x, mlp(b, x, 4 * d)))
    return b.build()


@pytest.fixture(scope="module")
def bench_table(tmp_path_factory: pytest.TempPathFactory):
    st = Store(tmp_path_factory.mktemp("attn") / "bench.db")
    run_bench("kernels", st, "cpu", references=_bench_refs(), config=FAST, profile_runs=3)
    return training_table(st, "cpu", method="single")


#: How far a layer-wise model of the transformer benchmarks may be from the tiny BERT.
FACTOR = 2.5


def test_layer_models_trained_on_transformer_kernels_predict_an_attention_network(
    bench_table,
) -> None:
    net = _tiny_bert()
    measured = measure(net, FAST).median_ms
    refs = list(bench_table["network"])
    y = bench_table["cpu"].to_numpy()
    cnn_only = [i for i, r in enumerate(refs) if "t=" not in r]
    for name in ("roofline", "statistical", "mixed", "lut"):
        model = make_predictor(name, mapping_networks=64, min_points=5, n_estimators=30)
        (p,) = model.fit(refs, y).predict([net])
        # within a factor 2.5 of the measured latency (the roofline is optimistic by design:
        # within a factor 2 below); the pooled fallback of CNN-only benchmarks is ~15x off.
        # Not tighter: single-kernel benchmarks carry each benchmark network's own overhead,
        # which on this 2-layer, 64-token net made the models 1.7-2.4x slow on an AVX2 EPYC
        # (under 1.6x on an AVX-512 Xeon) -- accuracy is the benchmarks' business
        # (benchmarks/kernel_real_networks.py, held_out_networks.py)
        lo = measured / (2.0 if name == "roofline" else FACTOR)
        assert lo < p < measured * FACTOR, (name, p, measured)
        if name == "mixed":
            layers = model.predict_layers([net])
            used = set(layers["model"])
            assert {"matmul:mixed", "bmm:mixed", "skiplayernorm:mixed", "gelu:mixed"} <= used
            assert not any(u.startswith("*:") for u in used)  # no pooled fallback
            # the mapping fuses each GELU into one group and each residual Add + LayerNorm
            # into another, never two LayerNorms into one
            gelu = layers[layers["key"] == "gelu"]
            assert len(gelu) == 2 and all(len(m) == 5 for m in gelu["layers"])
            ln = layers[layers["key"] == "skiplayernorm"]
            assert len(ln) == 4 and all(len(m) == 2 for m in ln["layers"])
    old = make_predictor("mixed", mapping_networks=64, min_points=5, n_estimators=30)
    (p_old,) = old.fit([refs[i] for i in cnn_only], y[cnn_only]).predict([net])
    assert p_old > measured * FACTOR  # the test above has teeth: CNN kernels alone fail it
