"""Which backend runs which precision on this CPU, and how fast: the facts behind BF16 support.

For a few networks, one thread: onnxruntime at FP32 and INT8 (the quantised QDQ model),
torch eager at FP32 and BF16 (weights and inputs in bfloat16: oneDNN's AVX512-BF16 kernels
where the CPU has them), each with latlab's measurement protocol (thread clock, so other
processes' time is not counted). Then whether onnxruntime's CPU provider can create a session
for a bfloat16 MatMul, Gemm, Conv and Add at all.

    python benchmarks/precision_backends.py          # ~1 min
"""

from __future__ import annotations

import argparse

import bench_common  # noqa: F401  (makes latlab importable from a checkout)
from bench_common import load_note, machine, write_result

NETWORKS = ["zoo:resnet18@112", "zoo:mobilenet_v2@112", "zoo:vit_s16@112"]
RUNS = [("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("torch", "fp32"), ("torch", "bf16")]


def ort_bf16_support() -> dict[str, str]:
    """Op -> "ok" or onnxruntime's first error line for a one-node bfloat16 model."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    out = {}
    bf = TensorProto.BFLOAT16
    for op in ("MatMul", "Gemm", "Conv", "Add"):
        conv = op == "Conv"
        x = helper.make_tensor_value_info("x", bf, [1, 4, 8, 8] if conv else [4, 4])
        w = helper.make_tensor_value_info("w", bf, [4, 4, 3, 3] if conv else [4, 4])
        y = helper.make_tensor_value_info("y", bf, None)
        graph = helper.make_graph([helper.make_node(op, ["x", "w"], ["y"])], "g", [x, w], [y])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        try:
            ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
            out[op] = "ok"
        except Exception as exc:
            out[op] = str(exc).splitlines()[0][:120]
    return out


def torch_bf16_ops() -> dict[str, dict[str, float] | bool]:
    """One-thread median ms (thread clock) of a MatMul and a Conv in torch at FP32 and BF16,
    and whether oneDNN reports native bf16 support: BF16 faster than FP32 on the MatMul means
    native AVX512-BF16 kernels, not emulation."""
    import time

    import torch

    torch.set_num_threads(1)

    def ms(fn: object, n: int = 20) -> float:
        for _ in range(2):
            fn()  # type: ignore[operator]
        ts = []
        for _ in range(n):
            t0 = time.thread_time()
            fn()  # type: ignore[operator]
            ts.append(time.thread_time() - t0)
        return sorted(ts)[n // 2] * 1e3

    a, b = torch.randn(512, 1024), torch.randn(1024, 1024)
    conv, x = torch.nn.Conv2d(128, 128, 3, padding=1).eval(), torch.randn(1, 128, 28, 28)
    out: dict[str, dict[str, float] | bool] = {
        "onednn_bf16": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    }
    with torch.no_grad():
        for dt, name in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
            aa, bb, c, xx = a.to(dt), b.to(dt), conv.to(dt), x.to(dt)
            out[name] = {"matmul_512x1024x1024": ms(lambda aa=aa, bb=bb: aa @ bb),
                         "conv_128_3x3_28": ms(lambda c=c, xx=xx: c(xx))}  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", nargs="+", default=NETWORKS)
    args = parser.parse_args()
    from latlab.datasets.measure import MeasureConfig, measure
    from latlab.datasets.measure.torch_backend import cpu_bf16_flags

    start = machine()
    rows = []
    for ref in args.networks:
        row: dict[str, float] = {}
        for backend, precision in RUNS:
            cfg = MeasureConfig(backend=backend, precision=precision, timer="thread",
                                time_budget_s=1.0)  # fmt: skip
            row[f"{backend}/{precision}"] = measure(ref, cfg).median_ms
        rows.append((ref, row))
    support = ort_bf16_support()
    ops = torch_bf16_ops()
    end = machine()
    load = max(start["load_average"][0], end["load_average"][0])
    lines = [
        "# Precision x backend on this CPU (one thread, median ms, thread clock)",
        "",
        f"CPU bf16 instructions: {', '.join(cpu_bf16_flags()) or 'none'}; load average "
        f"{start['load_average'][0]:.2f} -> {end['load_average'][0]:.2f} {load_note(load)}.",
        "",
        "| network | "
        + " | ".join(f"{b} {p}" for b, p in RUNS)
        + " | torch bf16/fp32 | ort int8/fp32 |",
        "|---|" + "---:|" * (len(RUNS) + 2),
    ]
    for ref, row in rows:
        cells = [f"{row[f'{b}/{p}']:.2f}" for b, p in RUNS]
        bf = row["torch/fp32"] / row["torch/bf16"]
        i8 = row["onnxruntime/fp32"] / row["onnxruntime/int8"]
        lines.append(f"| {ref} | " + " | ".join(cells) + f" | {bf:.2f}x | {i8:.2f}x |")
    lines += ["", "onnxruntime CPU provider, one-node bfloat16 models:", ""]
    lines += [f"- {op}: {why}" for op, why in support.items()]
    fp, bf = ops["fp32"], ops["bf16"]
    assert isinstance(fp, dict) and isinstance(bf, dict)
    lines += ["", f"torch single ops, one thread (oneDNN native bf16: {ops['onednn_bf16']}):", "",
              "| op | fp32 ms | bf16 ms | bf16 speed-up |", "|---|---:|---:|---:|"]  # fmt: skip
    lines += [f"| {k} | {fp[k]:.2f} | {bf[k]:.2f} | {fp[k] / bf[k]:.2f}x |" for k in fp]
    lines += ["", "`python benchmarks/precision_backends.py`"]
    doc = {"machine": {"start": start, "end": end}, "networks": dict(rows),
           "ort_bf16": support, "cpu_bf16": cpu_bf16_flags(), "torch_ops": ops}  # fmt: skip
    write_result("precision_backends", doc, lines)


if __name__ == "__main__":
    main()
