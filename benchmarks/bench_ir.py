"""Benchmark: ONNX file -> IR -> summary features, for a ResNet-50-sized model.

Target (Foundation issue): IR + features of a ResNet-50-sized ONNX file in <= 0.3 s on 2 cores.

The model is ``--onnx PATH`` or, by default, the zoo's ResNet-50 (``zoo:resnet50``, exported
with its weights through :func:`latlab.datasets.references.onnx_model`) written to a temporary
file, so that the timing includes reading and parsing a ~100 MB file as a user's would.

Stages timed (median and p90 over ``--repeats`` runs, after one warm-up):

* ``load``: parse the file (without external data) into a ModelProto;
* ``import``: ModelProto -> NetworkGraph (shape inference, constant folding, cost rules);
* ``features``: ``graph.totals`` and the summary encoder's feature vector;
* ``end_to_end``: path -> IR -> features, the figure compared with the target.

Usage::

    PYTHONPATH=src python benchmarks/bench_ir.py [--onnx PATH] [--quick] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TARGET_S = 0.3


def _features_fn() -> tuple[str, Callable[[Any], Any]]:
    """The summary encoder when this checkout has it, else the graph totals alone."""
    try:
        from latlab.encoders.vector import SummaryEncoder
    except ImportError:
        return "graph.totals", lambda g: g.totals.as_dict()
    encoder = SummaryEncoder()

    def features(graph: Any) -> Any:
        graph.totals  # noqa: B018 - computed (and cached) as part of the measured work
        return encoder.transform([graph])

    return "SummaryEncoder", features


def _model_file(args: argparse.Namespace, workdir: Path) -> tuple[Path, str]:
    if args.onnx:
        path = Path(args.onnx)
        if not path.is_file():
            sys.exit(f"error: ONNX file not found: {path}")
        return path, str(path)
    import onnx

    from latlab.datasets.references import onnx_model
    from latlab.errors import LatlabError

    try:
        model = onnx_model(args.reference)
    except LatlabError as exc:
        sys.exit(f"error: {exc} (pass --onnx PATH to time a file of your own)")
    path = workdir / "model.onnx"
    onnx.save(model, str(path))
    return path, args.reference


def _time(fn: Callable[[], Any], repeats: int) -> dict[str, float]:
    for _ in range(3):  # warm-up: imports, onnx schema caches, the allocator's first 100 MB
        fn()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    samples.sort()
    return {
        "median_s": statistics.median(samples),
        "p90_s": samples[min(len(samples) - 1, int(0.9 * len(samples)))],
        "min_s": samples[0],
        "repeats": repeats,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", help="ONNX file to time (default: the --reference model)")
    parser.add_argument("--reference", default="zoo:resnet50", help="network reference to export")
    parser.add_argument("--input-shape", help="input shape for dynamic inputs, e.g. 1,3,224,224")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="5 repeats")
    parser.add_argument("--json-out", help="write the results as JSON to this file")
    args = parser.parse_args(argv)
    repeats = 5 if args.quick else args.repeats
    shape = tuple(int(d) for d in args.input_shape.split(",")) if args.input_shape else None

    from latlab.encoders.onnx_import import from_onnx, load_model

    features_name, features = _features_fn()
    with tempfile.TemporaryDirectory(prefix="latlab-bench-ir-") as tmp:
        path, source = _model_file(args, Path(tmp))
        model = load_model(path)
        graph = from_onnx(model, input_shape=shape)
        end_to_end = _time(lambda: features(from_onnx(path, input_shape=shape)), repeats)
        load = _time(lambda: load_model(path), repeats)
        imported = _time(lambda: from_onnx(model, input_shape=shape), repeats)
        # features on fresh graphs (totals are cached on a graph once computed)
        fresh = iter([from_onnx(model, input_shape=shape) for _ in range(repeats + 3)])
        feats = _time(lambda: features(next(fresh)), repeats)
        stages = {"load": load, "import": imported, "features": feats, "end_to_end": end_to_end}
        size = path.stat().st_size
    totals = graph.totals
    result = {
        "benchmark": "bench_ir",
        "model": source,
        "file_mb": round(size / 1e6, 1),
        "layers": totals.n_layers,
        "gmacs": round(totals.macs / 1e9, 3),
        "mparams": round(totals.params / 1e6, 3),
        "unknown_ops": list(totals.unknown_ops),
        "features": features_name,
        "stages": stages,
        "target_s": TARGET_S,
        "meets_target": stages["end_to_end"]["median_s"] <= TARGET_S,
        "machine": {
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
        },
    }
    _print(result)
    if args.json_out:
        out = Path(args.json_out)
        tmp_out = out.with_suffix(out.suffix + ".tmp")
        tmp_out.write_text(json.dumps(result, indent=2) + "\n")
        tmp_out.replace(out)
    return result


def _print(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=(
            f"IR + features of {result['model']} ({result['file_mb']} MB, "
            f"{result['layers']} layers, {result['gmacs']} GMACs, {result['mparams']} M params)"
        )
    )
    table.add_column("stage")
    table.add_column("median ms", justify="right")
    table.add_column("p90 ms", justify="right")
    for name, s in result["stages"].items():
        table.add_row(name, f"{1000 * s['median_s']:.1f}", f"{1000 * s['p90_s']:.1f}")
    console = Console()
    console.print(table)
    verdict = "meets" if result["meets_target"] else "MISSES"
    console.print(
        f"end-to-end {1000 * result['stages']['end_to_end']['median_s']:.1f} ms {verdict} the "
        f"{1000 * result['target_s']:.0f} ms target (features: {result['features']})"
    )


if __name__ == "__main__":
    main()
