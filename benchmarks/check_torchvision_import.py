"""Check the torch -> ONNX -> IR import against torchvision's classification models.

For each model: export with a dynamic batch (legacy exporter, BatchNorm kept unless
``--fold``), import at batch 2, and compare

* the IR's parameter count with ``sum(p.numel() for p in model.parameters())``;
* every layer's output shape with the shape onnxruntime produces for that tensor;
* the ops without a cost rule (must be none).

torchvision is not a latlab dependency: the script exits with a message when it is missing.

Usage::

    PYTHONPATH=src python benchmarks/check_torchvision_import.py [--quick] [--fold]
        [--models resnet50,vit_b_16] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

MODELS = (
    "resnet50", "resnext50_32x4d", "mobilenet_v2", "mobilenet_v3_large", "googlenet",
    "inception_v3", "squeezenet1_0", "shufflenet_v2_x1_0", "efficientnet_b0", "densenet121",
    "mnasnet1_0", "regnet_y_400mf", "convnext_tiny", "alexnet", "vgg11", "vit_b_16", "swin_t",
)  # fmt: skip
QUICK = ("resnet50", "mobilenet_v3_large", "googlenet", "vit_b_16")


def check(name: str, fold: bool) -> dict[str, Any]:
    import numpy as np
    import onnxruntime as ort
    import torchvision.models as tvm
    from onnx import helper

    from latlab.encoders.onnx_import import from_onnx
    from latlab.encoders.torch_import import torch_to_onnx

    kwargs: dict[str, Any] = {}
    if name in ("googlenet", "inception_v3"):
        kwargs = {"aux_logits": False, "init_weights": False}
    size = 299 if name == "inception_v3" else 224
    module = getattr(tvm, name)(weights=None, **kwargs).eval()
    t0 = time.perf_counter()
    model = torch_to_onnx(module, (1, 3, size, size), dynamic_batch=True, fold_batchnorm=fold)
    t1 = time.perf_counter()
    graph = from_onnx(model, batch=2)
    t2 = time.perf_counter()

    declared = {o.name for o in model.graph.output}
    for layer in graph.layers:
        for t in layer.outputs:
            if t not in declared:
                model.graph.output.append(helper.make_empty_tensor_value_info(t))
                declared.add(t)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    x = np.zeros((2, 3, size, size), np.float32)
    shapes = {n: tuple(v.shape) for n, v in zip(names, sess.run(names, {"input": x}), strict=True)}
    mismatches = [
        f"{layer.name}: ort {shapes[t]} ir {s}"
        for layer in graph.layers
        for t, s in zip(layer.outputs, layer.output_shapes, strict=True)
        if shapes[t] != s
    ]
    torch_params = sum(p.numel() for p in module.parameters())
    return {
        "model": name,
        "layers": len(graph.layers),
        "gmacs_batch2": round(graph.totals.macs / 1e9, 3),
        "params": graph.totals.params,
        "torch_params": torch_params,
        "params_match": graph.totals.params == torch_params,
        "shape_mismatches": len(mismatches),
        "first_mismatches": mismatches[:3],
        "unknown_ops": list(graph.unknown_ops),
        "export_s": round(t1 - t0, 3),
        "import_s": round(t2 - t1, 3),
    }


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"only {', '.join(QUICK)}")
    parser.add_argument("--fold", action="store_true", help="fold BatchNorm (eval export)")
    parser.add_argument("--models", help="comma-separated torchvision model names")
    parser.add_argument("--json-out", help="write the results as JSON to this file")
    args = parser.parse_args(argv)
    try:
        import torchvision  # noqa: F401
    except ImportError:
        sys.exit("torchvision is not installed: pip install torchvision (matching torch)")
    names = args.models.split(",") if args.models else (QUICK if args.quick else MODELS)
    warnings.simplefilter("ignore")  # the legacy exporter's deprecation warnings

    from rich.console import Console
    from rich.table import Table

    results = [check(n, args.fold) for n in names]
    table = Table(title="torchvision -> ONNX -> IR (batch 2)")
    for col in ("model", "layers", "GMACs", "params", "torch params", "shape diffs", "unknown"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in results:
        table.add_row(
            r["model"],
            str(r["layers"]),
            f"{r['gmacs_batch2']:.3f}",
            f"{r['params']:,}",
            f"{r['torch_params']:,}" + ("" if r["params_match"] else " *"),
            str(r["shape_mismatches"]),
            ",".join(r["unknown_ops"]) or "-",
        )
    Console().print(table)
    if args.json_out:
        out = Path(args.json_out)
        tmp = out.with_suffix(out.suffix + ".tmp")
        tmp.write_text(json.dumps(results, indent=2) + "\n")
        tmp.replace(out)
    return results


if __name__ == "__main__":
    main()
