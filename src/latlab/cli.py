"""The ``latlab`` command: parses arguments, calls the library, prints with rich.

Kept thin: every command is a few lines around a library call. User errors
(:class:`latlab.errors.LatlabError`, and file/OS errors) become one red line on stderr and exit
code 2, never a traceback. Heavy imports (torch, mlflow, onnxruntime) happen inside the
commands that need them so that ``latlab --help`` stays fast.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Column, Table

from latlab.errors import LatlabError

if TYPE_CHECKING:
    from latlab.datasets.measure.protocol import CampaignResult, MeasureConfig

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="latlab: measure, model, compare and serve DNN inference latency predictors.",
)


def _wide(stream: Any) -> int | None:
    """Full width when output goes to a pipe or a file (rich would cut it at 80 columns and
    fold paths); the terminal's width otherwise (or COLUMNS when set)."""
    import os

    isatty = getattr(stream, "isatty", None)
    return None if os.environ.get("COLUMNS") or (isatty and isatty()) else 400


console = Console(width=_wide(sys.stdout))
err_console = Console(stderr=True, width=_wide(sys.stderr))

#: Default reference network of ``latlab measure`` (kept equal to protocol.DEFAULT_REFERENCE,
#: which is not imported here so that ``latlab --help`` stays light).
DEFAULT_REFERENCE_REF = "cnn:r64-c16s2-c32-rb32-c64s2-fc10"


def parse_threads(text: str) -> int:
    """``--threads``: a positive count, or ``all`` (every core this process may use)."""
    if text.strip().lower() == "all":
        from latlab.datasets.measure.load import usable_cores

        return usable_cores()
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        fail(f"--threads must be a positive number or 'all', got {text!r}")
    return value


#: Default report folder of ``latlab compare``: outside the committed ``reports/``, so that a
#: user's run never modifies the checkout's campaign (``--out reports/main`` regenerates it).
DEFAULT_COMPARE_OUT = "latlab-runs/main"


def fail(message: str, code: int = 2) -> None:
    """Print one error line and exit with ``code`` (for checks done in the CLI itself)."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise SystemExit(code)


@app.callback()
def _root() -> None:
    """latlab: measure, model, compare and serve DNN inference latency predictors."""


@app.command()
def version() -> None:
    """Print the latlab version."""
    from latlab import __version__

    console.print(__version__)


def parse_input_shape(text: str | None) -> tuple[int, ...] | None:
    """``1x3x224x224`` or ``1,3,224,224`` -> a shape tuple (one-line error otherwise)."""
    if text is None:
        return None
    parts = text.replace("x", ",").replace("X", ",").split(",")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if not shape or any(d < 1 for d in shape):
        fail(f"malformed --input-shape {text!r}: expected positive integers like 1x3x224x224")
    return shape


#: Tensors above this many elements (8 GiB at fp32) fit no runtime's memory on a usual machine.
_HUGE_ELEMENTS = 2**31


def _warn_absurd_size(graph: Any) -> None:
    """A warning (stderr) when a network's inputs or activations are too large to run: the
    counts are then formulas, and measuring it would fail."""
    import math

    biggest = max(
        (
            (math.prod(s), name)
            for name, s in [
                *graph.inputs.items(),
                *((layer.name, layer.output_shape) for layer in graph.layers),
                *((layer.name, w) for layer in graph.layers for w in layer.weight_shapes or ()),
            ]
            if s
        ),
        default=(0, ""),
    )
    if biggest[0] > _HUGE_ELEMENTS:
        err_console.print(
            f"[bold yellow]warning:[/] {graph.reference}: tensor {biggest[1]!r} has "
            f"{biggest[0]:.3g} elements ({4 * biggest[0] / 2**30:.3g} GiB at fp32): no runtime "
            "will run it here; the counts are formulas only",
            highlight=False,
            soft_wrap=True,
        )


def _human(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:g}"


@app.command()
def encode(
    refs: list[str] = typer.Argument(..., metavar="REF...", help="network references"),
    input_shape: str | None = typer.Option(
        None, "--input-shape", help="input shape for dynamic models, e.g. 1x3x224x224"
    ),
    batch: int = typer.Option(1, "--batch", min=1, help="batch size"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
) -> None:
    """Per network: MACs, FLOPs, parameters, bytes, layers and unknown ops."""
    from latlab.datasets.references import resolve

    shape = parse_input_shape(input_shape)
    graphs = [resolve(ref, batch=batch, input_shape=shape) for ref in refs]
    for g in graphs:
        _warn_absurd_size(g)
    rows = [g.summary() for g in graphs]
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    table = Table("MACs", "FLOPs", "params", "bytes r+w", "weights", "layers", "unknown ops")
    # References can be long (onnx: paths, nb201 cells): fold them rather than truncate.
    table.columns.insert(0, Column("network", overflow="fold", min_width=24))
    for row in rows:
        table.add_row(
            row["network"],
            _human(row["macs"]),
            _human(row["flops"]),
            _human(row["params"]),
            _human(row["bytes_read"] + row["bytes_written"]),
            _human(row["weight_bytes"]),
            str(row["layers"]),
            ", ".join(row["unknown_ops"]) or "-",
        )
    console.print(table)


def _check_out_path(out: Path | None, flag: str = "--out") -> None:
    """A table output, checked before any work (missing folders are created on writing)."""
    from latlab.fileio import prepare_output

    if out is None:
        return
    if out.suffix.lower() not in (".csv", ".parquet", ".pq"):
        fail(f"unsupported {flag} format {out.name!r}: use .csv or .parquet")
    prepare_output(out, flag)


def _check_references(refs: list[str], batch: int, shape: tuple[int, ...] | None) -> None:
    """Resolve every reference (cached for the work that follows) before anything is
    created or measured: a bad one fails first, naming itself."""
    from latlab.datasets.references import resolve

    for ref in refs:
        resolve(ref, batch=batch, input_shape=shape)


@app.command()
def measure(
    refs: list[str] | None = typer.Argument(None, metavar="[REF...]", help="network references"),
    space: str | None = typer.Option(None, "--space", help="sample networks from this space"),
    count: int | None = typer.Option(None, "--count", min=1, help="networks to sample"),
    seed: int = typer.Option(0, "--seed", help="sampling seed"),
    backend: str = typer.Option("onnxruntime", "--backend", help="measurement backend"),
    threads: str = typer.Option("1", "--threads", help="inference threads: a number or 'all'"),
    batch: int = typer.Option(1, "--batch", min=1, help="batch size"),
    mode: str = typer.Option(
        "sequential", "--mode", help="execution mode: sequential or parallel (operators at once)"
    ),
    inter_op: int | None = typer.Option(
        None, "--inter-op", min=1, help="inter-op threads (parallel mode; default: --threads)"
    ),
    input_shape: str | None = typer.Option(None, "--input-shape", help="e.g. 1x3x224x224"),
    precision: str = typer.Option(
        "fp32", "--precision", help="fp32, int8 (quantised QDQ, onnxruntime) or bf16 (torch)"
    ),
    device_name: str | None = typer.Option(
        None, "--device-name", help="latency column name (default: an id of machine+settings)"
    ),
    db: str = typer.Option("latlab.db", "--db", help="store: SQLite file or postgresql:// URL"),
    out: Path | None = typer.Option(None, "--out", help="write the dataset table (.csv/.parquet)"),
    value: str | None = typer.Option(
        None, "--value", help="--out holds corrected (default with a reference) or raw medians"
    ),
    repeats: int = typer.Option(100, "--repeats", min=1, help="timed runs per network (max)"),
    time_budget: float = typer.Option(2.0, "--time-budget", min=0.001, help="seconds per network"),
    reference: str | None = typer.Option(
        None, "--reference", help=f"reference network timed beside each [{DEFAULT_REFERENCE_REF}]"
    ),
    no_reference: bool = typer.Option(
        False, "--no-reference", help="time each network alone (raw medians only)"
    ),
    reestablish: bool = typer.Option(
        False, "--reestablish-reference", help="measure the reference value again (quiet machine)"
    ),
    strict_reference: bool = typer.Option(
        False, "--strict-reference", help="refuse a reference value taken on a loaded machine"
    ),
    max_drift: float | None = typer.Option(
        None, "--max-drift", min=0.0, help="stop when the reference drifts more (0.1 = 10 %)"
    ),
    pause_on_load: bool = typer.Option(
        False, "--pause-on-load", help="wait while other processes compete for the cores"
    ),
    pause_max: float | None = typer.Option(
        None, "--pause-max", min=0.0, help="longest wait per network with --pause-on-load (s)"
    ),
    anchor: str | None = typer.Option(None, "--anchor", help="old name of --reference"),
    anchor_every: int = typer.Option(
        25, "--anchor-every", min=1, help="store the reference's timings every N networks"
    ),
    no_anchor: bool = typer.Option(False, "--no-anchor", help="old name of --no-reference"),
    shuffle: bool = typer.Option(
        False, "--shuffle", help="random order (several workers sharing a PostgreSQL store)"
    ),
) -> None:
    """Measure networks on this machine into the store, and optionally write a dataset table.

    Each network is timed in rounds beside a reference network; the store keeps the raw
    median and the drift-corrected one (ratio to the reference x the device's reference value).
    Threads, batch, mode and precision are part of the device: the default name says them
    (xeon-2c-ort-4t-b8-par4-int8). --precision int8 measures each network's statically
    quantised QDQ model (onnxruntime); a network the quantiser leaves partly in float is
    measured as it runs and reported as mixed. Completed measurements are committed one by
    one: after an interruption, the same command resumes where it stopped. The --out table is
    written only when every network is measured (FILE.meta.json beside it says which value it
    holds).
    """
    from latlab.datasets.measure import MeasureConfig, default_device_name, get_backend
    from latlab.datasets.measure.protocol import measure_many
    from latlab.datasets.spaces import sample
    from latlab.datasets.store import Store
    from latlab.datasets.tables import save_table

    if refs and space:
        fail("give either network references or --space, not both")
    if not refs and not space:
        fail("give network references or --space NAME --count N")
    if space and count is None:
        fail("--space needs --count N")
    if mode not in ("sequential", "parallel"):
        fail(f"--mode must be sequential or parallel, got {mode!r}")
    _check_precision(precision, backend)
    if value not in (None, "corrected", "raw"):
        fail(f"--value must be corrected or raw, got {value!r}")
    if (no_reference or no_anchor) and (reference or anchor):
        fail("give --reference or --no-reference, not both")
    _check_out_path(out)
    n_threads = parse_threads(threads)
    inter = (inter_op or n_threads) if mode == "parallel" else (inter_op or 1)
    ref_net = (
        None if (no_reference or no_anchor) else (reference or anchor or DEFAULT_REFERENCE_REF)
    )
    if ref_net is None and (value == "corrected" or reestablish or strict_reference):
        fail("--value corrected and the reference options need a reference (drop --no-reference)")
    shape = parse_input_shape(input_shape)
    references = list(refs) if refs else sample(str(space), int(count or 0), seed)
    _check_references(references, batch, shape)
    if ref_net is not None:
        _check_references([ref_net], batch, None)
    config = MeasureConfig(
        backend=backend,
        threads=n_threads,
        batch=batch,
        input_shape=shape,
        repeats=repeats,
        min_repeats=min(10, repeats),
        time_budget_s=time_budget,
        mode=mode,
        inter_op_threads=inter,
        reference=ref_net,
        precision=precision,
    )
    be = get_backend(backend)
    device = device_name or default_device_name(
        backend,
        n_threads,
        accelerator=be.info().get("gpu"),
        batch=batch,
        mode=mode,
        inter_op_threads=inter,
        precision=precision,
    )
    store = Store(db)
    with _progress_bar(eta=True, current=True) as bar:
        task = bar.add_task(f"measuring on {device}", total=len(references), current="")

        def on_event(event: Any) -> None:
            label = {"anchor": "anchor ", "reference": "reference value of ", "paused": "paused: "}
            current = label.get(event.kind, "") + str(event.network or "")
            bar.update(task, completed=event.done, total=event.total, current=current)

        result = measure_many(
            references,
            config,
            store,
            device,
            backend=be,
            anchor=None,
            anchor_every=anchor_every,
            max_drift=max_drift,
            pause_on_load=pause_on_load,
            pause_max_s=pause_max,
            strict_reference=strict_reference,
            reestablish_reference=reestablish,
            shuffle=shuffle,
            progress=on_event,
        )
    kind = value or ("corrected" if ref_net is not None else "raw")
    table = store.export_table(devices=[device], protocol=config, networks=references, value=kind)
    if out is not None:
        save_table(table, out)
    _print_measure_summary(result, table, config, store.display_url, out, kind)
    _print_precision(result)
    store.close()


#: Backends that run each precision (int8: the quantised QDQ model; bf16: torch's kernels).
PRECISION_BACKENDS = {"int8": ("onnxruntime",), "bf16": ("torch",)}


def _check_precision(precision: str, backend: str) -> None:
    """One line, before any work, for an unknown precision or one the backend cannot run."""
    from latlab.encoders.quantize import PRECISIONS

    if precision not in PRECISIONS:
        fail(f"unknown --precision {precision!r} (known: {', '.join(PRECISIONS)})")
    ok = PRECISION_BACKENDS.get(precision)
    if ok is not None and backend not in ok:
        why = (
            "onnxruntime's CPU provider has no bfloat16 Conv/MatMul/Gemm kernels"
            if precision == "bf16"
            else "latlab quantises with onnxruntime's tooling"
        )
        fail(f"--precision {precision} needs --backend {' or '.join(ok)} ({why})")


def _print_precision(result: CampaignResult) -> None:
    """Say which networks did not run fully at the precision asked (mixed precision)."""
    for m in result.measured:
        prec = m.backend_info.get("precision")
        if isinstance(prec, dict) and prec.get("label") not in (None, "int8", "bf16"):
            ex = prec.get("executed", {})
            frac = ex.get("int8_mac_fraction", prec.get("graph", {}).get("int8_mac_fraction"))
            where = "in int8 kernels" if "int8_mac_fraction" in ex else "quantised in the graph"
            err_console.print(
                f"[yellow]mixed precision:[/] {m.network} runs {prec['label']} "
                f"({100 * float(frac or 0.0):.1f} % of MACs {where})",
                highlight=False,
            )


def _print_measure_summary(
    result: CampaignResult,
    table: Any,
    config: MeasureConfig,
    url: str,
    out: Path | None,
    kind: str = "raw",
) -> None:
    values = table[result.device].to_numpy(dtype=float) if len(table) else []
    stats = Table(
        title=f"latency on {result.device} ({config.backend}, {config.threads} thread"
        f"{'s' if config.threads != 1 else ''}, batch {config.batch})",
        show_header=False,
    )
    stats.add_row("networks", str(len(table)))
    stats.add_row(
        "values",
        f"{kind} medians" + (f" (reference {config.reference})" if config.reference else ""),
    )
    if result.reference_value is not None:
        rv = result.reference_value
        stats.add_row("reference value", f"{rv.value_ms:.4f} ms ({rv.quality})")
    stats.add_row("measured now", str(len(result.measured)))
    stats.add_row("already in store", str(len(result.skipped)))
    if len(values):
        import numpy as np

        stats.add_row("median latency", f"{np.median(values):.4f} ms")
        stats.add_row("min / max", f"{np.min(values):.4f} / {np.max(values):.4f} ms")
    if result.measured:
        cvs = sorted(m.robust_cv for m in result.measured)
        unstable = sum(not m.stable for m in result.measured)
        stats.add_row("median robust CV (new)", f"{cvs[len(cvs) // 2]:.3f}")
        stats.add_row("robust CV above threshold", f"{unstable} of {len(cvs)}")
    if result.max_drift is not None:
        what = "reference" if config.reference else "anchor"
        stats.add_row(f"{what} drift (max)", f"{100 * result.max_drift:.1f} %")
    if result.measured:
        stats.add_row("measured under load", f"{len(result.loaded)} of {len(result.measured)}")
        loadavg = result.measured[-1].load.get("loadavg")
        if loadavg:
            stats.add_row("load average (1 min)", f"{loadavg[0]:.2f}")
    if result.paused_s:
        stats.add_row("paused for load", f"{result.paused_s:.0f} s")
    stats.add_row("store", url)
    if out is not None:
        stats.add_row("table", str(out))
    console.print(stats)


@app.command()
def bench(
    suite: str | None = typer.Option(
        None,
        "--suite",
        help="kernels, padding, multilayer, context or all (default: all, unless --export)",
    ),
    count: int | None = typer.Option(
        None, "--count", min=1, help="benchmarks in the suite (default: what the models need)"
    ),
    seed: int = typer.Option(0, "--seed", help="suite generation seed"),
    threads: int = typer.Option(1, "--threads", min=1, help="inference threads"),
    device_name: str | None = typer.Option(
        None, "--device-name", help="device name in the store (default: machine+backend id)"
    ),
    db: str = typer.Option("latlab.db", "--db", help="store: SQLite file or postgresql:// URL"),
    export: Path | None = typer.Option(
        None, "--export", help="write the layer-model training table (.csv/.parquet)"
    ),
    method: str = typer.Option(
        "padded", "--method", help="layer time in the DEVICE column: padded, single or profile"
    ),
    export_fusion: Path | None = typer.Option(
        None, "--export-fusion", help="write the fusion labels (.csv/.parquet)"
    ),
    timer: str = typer.Option(
        "wall", "--timer", help="protocol clock: wall, or thread (ignores other processes' time)"
    ),
    reference: str | None = typer.Option(
        None, "--reference", help=f"reference network (drift correction) [{DEFAULT_REFERENCE_REF}]"
    ),
    no_reference: bool = typer.Option(
        False, "--no-reference", help="raw times, no drift correction"
    ),
    precision: str = typer.Option(
        "fp32", "--precision", help="fp32 or int8 (the quantised versions of the networks)"
    ),
) -> None:
    """Benchmarks of a device, resumable: micro-kernels, smart padding, fusion, in-context kernels.

    With no --suite (and no --export) every suite runs in turn: the data every kernel and
    layer-wise predictor needs. Times are drift-corrected against the reference network on the
    device's reference scale (the one `latlab measure` uses), so kernel and network data of a
    device agree in scale. Each benchmark is committed when done: after an interruption the
    same command resumes.
    --export writes the table `latlab train --predictor roofline|refined|statistical|mixed|lut`
    trains on (columns DEVICE, DEVICE@single, DEVICE@padded, DEVICE@profile).
    """
    from latlab.datasets.measure import default_device_name

    run_all = suite == "all" or (suite is None and export is None and export_fusion is None)
    _check_out_path(export, "--export")
    _check_out_path(export_fusion, "--export-fusion")
    from dataclasses import replace

    from latlab.datasets.bench.campaign import (
        ALL_SUITES,
        BENCH_PAIRED,
        PRECISION_SUITES,
        SUITES,
        default_count,
        run_bench,
    )
    from latlab.datasets.store import Store

    if suite is not None and suite != "all" and suite not in SUITES:
        fail(f"unknown --suite {suite!r} (known: {', '.join(SUITES)}, all)")
    if run_all and count is not None:
        fail("--count applies to one --suite; every suite runs at its default size")
    if timer not in ("wall", "thread") or (timer == "thread" and threads != 1):
        fail(f"--timer must be wall, or thread with --threads 1 (got {timer!r})")
    if no_reference and reference:
        fail("give --reference or --no-reference, not both")
    _check_precision(precision, "onnxruntime")
    if precision != "fp32" and not (suite in PRECISION_SUITES or run_all):
        fail(f"--precision {precision} benchmarks the suites {', '.join(PRECISION_SUITES)}")
    ref_net = None if no_reference else (reference or BENCH_PAIRED.reference)
    config = replace(
        BENCH_PAIRED, timer=timer, threads=threads, reference=ref_net, precision=precision
    )
    device = device_name or default_device_name("onnxruntime", threads, precision=precision)
    store = Store(db)
    every = PRECISION_SUITES if precision != "fp32" else ALL_SUITES
    suites = list(every) if run_all else ([suite] if suite is not None else [])
    import time

    started = time.perf_counter()
    for k, name in enumerate(suites, 1):
        n = count or default_count(name)
        label = f"[{k}/{len(suites)}] {name} on {device}" if len(suites) > 1 else name
        with _progress_bar(eta=True, current=True) as bar:
            task = bar.add_task(label, total=None, current="")

            def on_event(event: Any, task: Any = task) -> None:
                bar.update(
                    task, completed=event.done, total=event.total, current=event.network or ""
                )

            result = run_bench(
                name,
                store,
                device,
                count=n,
                seed=seed,
                threads=threads,
                config=config,
                progress=on_event,
            )
        console.print(
            f"{name}: {len(result.references)} benchmarks on {device} "
            f"({len(result.measured)} measured now, {len(result.skipped)} already stored, "
            f"{len(result.failed)} failed) -> {store.display_url}",
            highlight=False,
        )
        for ref, why in list(result.failed.items())[:5]:
            err_console.print(f"[yellow]failed:[/] {ref}: {why}", highlight=False)
    if len(suites) > 1:
        console.print(f"all suites done in {time.perf_counter() - started:.0f} s", highlight=False)
    if export is not None or export_fusion is not None:
        from latlab.datasets.bench.export import fusion_table, training_table
        from latlab.datasets.tables import save_table

        if export is not None:
            other = "thread" if timer == "wall" else "wall"
            alt = replace(config, timer=other) if other == "wall" or threads == 1 else None
            table = training_table(
                store,
                device,
                method=method,
                protocol_key=config.protocol_key(),
                other_protocols={alt.protocol_key(): f"--timer {other}"} if alt else None,
            )
            save_table(table, export)
            console.print(f"wrote {export}: {len(table)} benchmarks, columns {list(table)[1:]}")
        if export_fusion is not None:
            labels = fusion_table(store, device)
            save_table(labels, export_fusion)
            console.print(f"wrote {export_fusion}: {len(labels)} layer pairs")
    store.close()


@app.command()
def quantize(
    refs: list[str] = typer.Argument(..., metavar="REF...", help="network references"),
    out: Path | None = typer.Option(
        None, "--out", help="write the quantised model (.onnx; one reference only)"
    ),
    as_json: bool = typer.Option(False, "--json", help="print the reports as JSON"),
) -> None:
    """Statically quantise networks to INT8 QDQ ONNX models and say what runs at int8.

    onnxruntime's quantize_static (QDQ, per-channel int8 weights, uint8 activations) calibrated
    on generated inputs, cached by content hash (what --precision int8 measures). Per network:
    the quantised graph's share of MACs at int8, and what onnxruntime executes (int8 only when
    every MAC runs in an int8 kernel; mixed otherwise).
    """
    from latlab.datasets.bench.kernels_quant import executed_precision
    from latlab.datasets.references import onnx_model
    from latlab.encoders.quantize import qdq_report
    from latlab.fileio import atomic_write_bytes, prepare_output

    if out is not None:
        if len(refs) != 1:
            fail("--out writes one model: give one reference")
        if out.suffix.lower() != ".onnx":
            fail(f"unsupported --out format {out.name!r}: use .onnx")
        prepare_output(out, "--out")
    _check_references(list(refs), 1, None)
    rows: list[dict[str, Any]] = []
    for ref in refs:
        model = onnx_model(ref, precision="int8")
        graph = qdq_report(model)
        executed = executed_precision(ref)
        label = executed["label"] if graph.label == "int8" else graph.label
        rows.append({"network": ref, "label": label, "graph": graph.as_dict(),
                     "executed": executed})  # fmt: skip
        if out is not None:
            atomic_write_bytes(out, model.SerializeToString())
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    table = Table(title="INT8 (static QDQ, onnxruntime)")
    for col in ("network", "runs at", "MACs int8 (graph)", "MACs int8 (executed)", "float kernels"):
        table.add_column(col)
    for r in rows:
        fl = r["executed"]["float_kernels"]
        table.add_row(
            r["network"],
            r["label"],
            f"{100 * r['graph']['int8_mac_fraction']:.1f} %",
            f"{100 * r['executed']['int8_mac_fraction']:.1f} %",
            ", ".join(f"{n} {op}" for op, n in fl.items()) or "none",
        )
    console.print(table)
    if out is not None:
        console.print(f"wrote {out}", highlight=False)


@app.command("table")
def table_cmd(
    path: Path = typer.Argument(..., help="dataset table (.csv or .parquet)"),
    min_ms: float | None = typer.Option(
        None, "--min-ms", help="drop latencies below this many ms (failed runs; none by default)"
    ),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
) -> None:
    """Validate a dataset table and report, per column, the invalid latencies it drops, the
    suspect and conflicting values it keeps, and references that do not parse."""
    from latlab.datasets.references import invalid_references
    from latlab.datasets.tables import load_table

    loaded = load_table(path, min_ms)
    bad_refs = invalid_references(loaded.networks)
    if as_json:
        report = {
            "rows": len(loaded),
            "duplicates": loaded.duplicates,
            "invalid_references": [
                {"row": i + 1, "network": ref, "error": why} for i, ref, why in bad_refs
            ],
            "columns": loaded.report_dict(),
        }
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return
    keys = {
        "rows": "rows",
        "valid": "valid",
        "text": "text",
        "missing": "missing",
        "non_finite": "inf",
        "non_positive": "<= 0",
        "implausible": "> 1e7 ms",
        "below_min": "< --min-ms",
        "suspect": "suspect (kept)",
        "conflicts": "conflicts",
    }
    table = Table(
        "column",
        *keys.values(),
        "quantised",
    )
    for col, row in loaded.report.iterrows():
        table.add_row(
            str(col), *(str(int(row[k])) for k in keys), "yes" if row["quantised"] else ""
        )
    # The path on its own line: as the table's title it would be folded to the table's width.
    console.print(
        f"{path}: {len(loaded)} networks, {loaded.duplicates} duplicates dropped",
        highlight=False,
        soft_wrap=True,
    )
    console.print(table)
    if bad_refs:
        i, _ref, why = bad_refs[0]
        err_console.print(
            f"[bold yellow]warning:[/] {len(bad_refs)} of {len(loaded)} references do not parse "
            f"(row {i + 1}: {why})",
            highlight=False,
            soft_wrap=True,
        )


# ------------------------------------------------------------- train / evaluate / predict


def _parse_params(items: list[str] | None) -> dict[str, Any]:
    """``--param key=value`` (value as JSON when it parses: numbers, lists, null, true)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            fail(f"malformed --param {item!r}: expected KEY=VALUE, e.g. learning_rate=0.01")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def _check_confidence_option(confidence: float | None) -> None:
    from latlab.confidence import check_confidence

    if confidence is not None:
        try:
            check_confidence(confidence, "--confidence")
        except LatlabError as exc:
            fail(str(exc))


def _tracker(no_mlflow: bool, experiment: str | None) -> Any:
    from latlab.training.tracking import Tracker

    # MLflow's and alembic's INFO lines (database creation and migrations) are not ours to show.
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)

    return Tracker(enabled=not no_mlflow, experiment=experiment)


def _json_out(data: Any) -> None:
    from latlab.jsonio import dumps

    sys.stdout.write(dumps(data, indent=2) + "\n")


def _fmt(key: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    if key == "n":
        return str(int(value))
    if key in ("mae", "rmse"):
        return f"{value:.4g}"
    if key in ("spearman", "kendall", "confidence"):
        return f"{value:.4f}"
    return f"{value:.2f}"


_METRIC_HEADERS = {
    "n": "n",
    "mae": "MAE ms",
    "rmse": "RMSE ms",
    "mape": "MAPE %",
    "rmspe": "RMSPE %",
    "acc1": "±1 %",
    "acc5": "±5 %",
    "acc10": "±10 %",
    "acc20": "±20 %",
    "spearman": "ρ",
    "kendall": "τ",
    "coverage": "coverage %",
    "mean_relative_width": "width %",
}


def _metrics_table(rows: dict[str, dict[str, Any]], title: str, first: str = "metric") -> Table:
    """One row per metric, one column per split or family (narrow enough for a terminal)."""
    keys = [k for k in _METRIC_HEADERS if any(k in r for r in rows.values())]
    table = Table(first, *(Column(name, justify="right") for name in rows), title=title)
    for k in keys:
        table.add_row(_METRIC_HEADERS[k], *(_fmt(k, r.get(k)) for r in rows.values()))
    return table


def _progress_bar(
    *, elapsed: bool = True, eta: bool = False, current: bool = False, transient: bool = True
) -> Any:
    """latlab's progress bar on stderr: description, bar, done/total, then optionally the
    elapsed time, the time remaining and a task's ``current`` field (the item in progress)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns: list[Any] = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn()]
    if elapsed:
        columns.append(TimeElapsedColumn())
    if eta:
        columns.append(TimeRemainingColumn())
    if current:
        columns.append(TextColumn("{task.fields[current]}", style="dim"))
    return Progress(*columns, console=err_console, transient=transient)


@app.command()
def train(
    data: str = typer.Option(..., "--data", help="dataset table (.csv/.parquet) or store URL"),
    target: str = typer.Option(..., "--target", help="latency column (the device)"),
    predictor: str = typer.Option(..., "--predictor", help="predictor name (e.g. gbm, fcnn)"),
    out: Path = typer.Option(..., "--out", help="bundle directory to write"),
    train_size: int | None = typer.Option(None, "--train-size", help="rows to fit on"),
    val_size: int | None = typer.Option(None, "--val-size", help="validation rows"),
    cal_size: int | None = typer.Option(None, "--cal-size", help="calibration rows (conformal)"),
    test_size: float | None = typer.Option(
        None, "--test-size", help="test rows (count, or a fraction < 1)"
    ),
    split: str = typer.Option("random", "--split", help="random or family"),
    test_families: str | None = typer.Option(
        None, "--test-families", help="family split: comma-separated families held out"
    ),
    seed: int = typer.Option(0, "--seed", help="split and model seed"),
    tune: int = typer.Option(0, "--tune", help="Optuna trials (the study's total budget)"),
    storage: str | None = typer.Option(
        None, "--storage", help="Optuna storage: SQLite file, RDB URL or journal:FILE"
    ),
    study: str | None = typer.Option(None, "--study", help="Optuna study name"),
    tune_timeout: float | None = typer.Option(None, "--tune-timeout", help="seconds"),
    tune_seed: int | None = typer.Option(
        None, "--tune-seed", help="sampler seed (default --seed; distinct per parallel worker)"
    ),
    conformal: str = typer.Option(
        "split", "--conformal", help="split, cm-tv, cm-lv, cm-o, cps, cv+, oob (rf only) or none"
    ),
    confidence: float = typer.Option(0.9, "--confidence", help="interval confidence"),
    pretrain: str | None = typer.Option(
        None, "--pretrain", help="table of source devices (transfer predictor)"
    ),
    param: list[str] | None = typer.Option(None, "--param", help="predictor parameter KEY=VALUE"),
    min_ms: float | None = typer.Option(
        None, "--min-ms", help="drop latencies below this many ms (failed runs; none by default)"
    ),
    experiment: str | None = typer.Option(None, "--experiment", help="MLflow experiment"),
    no_mlflow: bool = typer.Option(False, "--no-mlflow", help="do not log to MLflow"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Train one device's predictor and write a bundle (tuning, intervals, MLflow logging)."""
    from latlab.training.bundle import check_bundle_out
    from latlab.training.pipeline import TrainConfig
    from latlab.training.pipeline import train as run_train

    check_bundle_out(out, "--out")  # before any work (missing folders are created on saving)
    _check_confidence_option(confidence)
    if split not in ("random", "family"):
        fail(f"unknown --split {split!r}: use random or family")
    if test_size is not None and test_size >= 1 and test_size != int(test_size):
        fail(f"--test-size must be a row count or a fraction below 1, got {test_size:g}")
    config = TrainConfig(
        predictor=predictor,
        params=_parse_params(param),
        split=split,
        train_size=train_size,
        val_size=val_size,
        cal_size=cal_size,
        test_size=(int(test_size) if test_size is not None and test_size >= 1 else test_size),
        test_families=tuple(f.strip() for f in test_families.split(",")) if test_families else None,
        seed=seed,
        tune=tune,
        storage=storage,
        study=study,
        tune_timeout=tune_timeout,
        tune_seed=tune_seed,
        conformal=None if conformal == "none" else conformal,
        confidence=confidence,
        pretrain=pretrain,
        min_ms=min_ms,
    )
    with _progress_bar(elapsed=False) as bar:
        task = bar.add_task("loading", total=None)

        def progress(stage: str, done: int | None, total: int | None) -> None:
            label = {"tune": "tuning (trials)"}.get(stage, stage)
            bar.update(task, description=label, completed=done or 0, total=total)

        result = run_train(
            data, target, config, out, tracker=_tracker(no_mlflow, experiment), progress=progress
        )
    if as_json:
        _json_out(
            {
                "out": str(result.out),
                "predictor": predictor,
                "target": target,
                "split": result.split.describe(),
                "metrics": result.metrics,
                "by_family": result.by_family,
                "tuning": result.tuning.as_dict() if result.tuning else None,
                "warnings": result.warnings,
                "mlflow_run_id": result.run_id,
            }
        )
        return
    sizes = result.split.describe()
    console.print(
        f"[bold]{predictor}[/] on [bold]{target}[/]: train {sizes['train']}, validation "
        f"{sizes['val']}, calibration {sizes['cal']}, test {sizes['test']} ({sizes['kind']} "
        f"split, seed {sizes['seed']})",
        highlight=False,
    )
    if result.metrics:
        console.print(_metrics_table(result.metrics, "metrics"))
    if len(result.by_family) > 1:
        console.print(_metrics_table(result.by_family, "test by family"))
    if result.tuning is not None:
        t = result.tuning
        chosen = "defaults kept" if t.used_defaults else f"best trial {t.best_trial}"
        console.print(
            f"tuning: study {t.study_name!r}, {t.n_trials} trials ({t.n_pruned} pruned), "
            f"validation MAPE {t.value:.3f} % vs defaults {t.default_value:.3f} % ({chosen})",
            highlight=False,
        )
    console.print(f"bundle: {result.out}", highlight=False)
    if result.run_id:
        console.print(f"MLflow run: {result.run_id}", highlight=False)


@app.command()
def evaluate(
    bundle: Path = typer.Option(..., "--bundle", help="bundle directory"),
    data: str = typer.Option(..., "--data", help="dataset table or store URL"),
    target: str = typer.Option(..., "--target", help="latency column"),
    confidence: float | None = typer.Option(
        None, "--confidence", help="interval confidence (default: the bundle's, 0.9)"
    ),
    experiment: str | None = typer.Option(None, "--experiment", help="MLflow experiment"),
    no_mlflow: bool = typer.Option(False, "--no-mlflow", help="do not log to MLflow"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
    min_ms: float | None = typer.Option(
        None, "--min-ms", help="drop latencies below this many ms (failed runs; none by default)"
    ),
) -> None:
    """Metrics of a bundle on every valid row of a table (and per network family)."""
    from latlab.training.pipeline import evaluate as run_evaluate

    _check_confidence_option(confidence)
    result = run_evaluate(
        bundle, data, target, confidence, tracker=_tracker(no_mlflow, experiment), min_ms=min_ms
    )
    if as_json:
        _json_out({**result.metrics, "by_family": result.by_family})
        return
    rows = {"all": result.metrics}
    if len(result.by_family) > 1:
        rows.update(result.by_family)
    title = f"{bundle} on {target}"
    if "confidence" in result.metrics:
        title += f" (intervals at {result.metrics['confidence']:g})"
    console.print(_metrics_table(rows, title))


@app.command()
def predict(
    refs: list[str] = typer.Argument(..., metavar="REF...", help="network references"),
    bundle: Path = typer.Option(..., "--bundle", help="bundle directory"),
    confidence: float | None = typer.Option(
        None, "--confidence", help="interval confidence (default: the bundle's, 0.9)"
    ),
    experiment: str | None = typer.Option(None, "--experiment", help="MLflow experiment"),
    no_mlflow: bool = typer.Option(False, "--no-mlflow", help="do not log to MLflow"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
    layers: bool = typer.Option(
        False, "--layers", help="also the per-kernel (kernel) or per-layer table"
    ),
) -> None:
    """Predicted latency (ms) of networks, with intervals when the bundle is calibrated."""
    from latlab.training.bundle import load_bundle
    from latlab.training.pipeline import predict as run_predict

    _check_confidence_option(confidence)
    b = load_bundle(bundle)
    frame = run_predict(b, refs, confidence, tracker=_tracker(no_mlflow, experiment))
    per = None
    if (layers or as_json) and hasattr(b.predictor, "predict_layers"):
        per = b.predictor.predict_layers(refs)
        if "covered" in per:
            missing = per[~per["covered"]].groupby("network_index")["op"].apply(list)
            frame["uncovered_kernels"] = [missing.get(i, []) for i in range(len(frame))]
            frame["uncovered"] = [bool(missing.get(i, [])) for i in range(len(frame))]
    if as_json:
        records = frame.to_dict(orient="records")
        if layers and per is not None:
            for i, rec in enumerate(records):
                rec["kernels"] = per[per["network_index"] == i].to_dict(orient="records")
        _json_out(records)
        return
    if layers and per is not None:
        _print_kernel_table(per)
    table = Table(Column("network", overflow="fold", min_width=24), "latency ms")
    calibrated = "lower_ms" in frame
    if calibrated:
        c = float(frame["confidence"].iloc[0])
        table.add_column(f"{100 * c:g} % interval (ms)")
    flagged = "out_of_distribution" in frame
    if flagged:
        table.add_column("outside calibration")
    for row in frame.itertuples(index=False):
        cells = [row.network, f"{row.latency_ms:.4g}"]
        if calibrated:
            cells.append(f"{row.lower_ms:.4g} – {row.upper_ms:.4g}")
        if flagged:
            cells.append("[yellow]yes[/]" if row.out_of_distribution else "")
        table.add_row(*cells)
    console.print(table)


def _print_kernel_table(per: Any) -> None:
    """The per-kernel (or per-mapped-layer) predictions behind ``latlab predict --layers``."""
    kernel = "covered" in per
    for ref, grp in per.groupby("network", sort=False):
        table = Table(title=str(ref), title_justify="left")
        cols = (
            ["op", "shapes", "predicted ms", "covered"]
            if kernel
            else ["layers", "op", "model", "predicted ms"]
        )
        for col in cols:
            table.add_column(col, justify="right" if col == "predicted ms" else "left",
                             overflow="fold")  # fmt: skip
        for r in grp.itertuples(index=False):
            if kernel:
                shapes = " ".join("x".join(str(d) for d in s) for s in r.input_shapes[:2])
                shapes += " -> " + " ".join("x".join(str(d) for d in s) for s in r.output_shapes)
                cov = "yes" if r.covered else "[yellow]no (roofline)[/]"
                table.add_row(str(r.op), shapes, f"{r.predicted_ms:.4g}", cov)
            else:
                table.add_row(" + ".join(r.layers), str(r.op), str(r.model),
                              f"{r.predicted_ms:.4g}")  # fmt: skip
        console.print(table)
        if kernel and not grp["covered"].all():
            ops = sorted(set(grp.loc[~grp["covered"], "op"]))
            err_console.print(
                f"[yellow]{ref}: {int((~grp['covered']).sum())} kernels no model covers "
                f"(costed by the roofline fallback): {', '.join(ops)}[/]",
                highlight=False,
            )


@app.command()
def nas(
    bundle: Path = typer.Option(..., "--bundle", help="bundle directory"),
    budget_ms: float = typer.Option(..., "--budget-ms", help="latency budget (ms)"),
    space: str = typer.Option(
        "nb201", "--space", help="search space the bundle was trained on: nb201, fbnet, ofa"
    ),
    confidence: float | None = typer.Option(
        None,
        "--confidence",
        help="test the conformal upper bound at this confidence (default: the bundle's)",
    ),
    point: bool = typer.Option(
        False, "--point", help="test the point prediction instead of the upper bound"
    ),
    objective: str = typer.Option("macs", "--objective", help="macs or params (maximised)"),
    cycles: int = typer.Option(2000, "--cycles", help="children evaluated"),
    population: int = typer.Option(64, "--population", help="population size"),
    sample: int = typer.Option(8, "--sample", help="tournament size"),
    top: int = typer.Option(10, "--top", help="architectures to report"),
    seed: int = typer.Option(0, "--seed", help="random seed"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Evolutionary search for the largest networks (MACs, a capacity proxy) whose predicted
    latency upper bound is within the budget."""
    from latlab.experiments.nas import check_search, check_settings, search
    from latlab.training.bundle import load_bundle

    _check_confidence_option(confidence)
    if point and confidence is not None:
        fail("--point and --confidence exclude each other")
    b = load_bundle(bundle)
    conf = None if point else (confidence if confidence is not None else b.confidence)
    if not point and not b.calibrated:
        fail(f"bundle {bundle} has no conformal calibration: use --point (point predictions)")
    check_search(space, budget_ms, objective, conf)
    check_settings(top=top, cycles=cycles, population=population, sample=sample)
    with _progress_bar(eta=True) as bar:
        task = bar.add_task("search", total=population + cycles)
        step = max(1, (population + cycles) // 10)
        said = [0]

        def on_progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)
            # Not on a terminal (a pipe, a log file), the bar is invisible: a line per 10 %.
            if not err_console.is_terminal and done - said[0] >= step:
                said[0] = done
                err_console.print(f"nas: {done}/{total} evaluated", highlight=False)

        result = search(
            b,
            budget_ms,
            confidence=conf,
            space=space,
            objective=objective,
            population=population,
            sample=sample,
            cycles=cycles,
            top=top,
            seed=seed,
            progress=on_progress,
        )
    if as_json:
        _json_out(result.as_dict())
        return
    bound = "point" if conf is None else f"{100 * conf:g} % upper bound"
    table = Table(
        "#",
        Column("network", overflow="fold", min_width=24),
        Column(f"{objective} (M)", justify="right"),
        Column("latency ms", justify="right"),
        Column("bound ms", justify="right"),
        title=f"nas: {objective} under {budget_ms:g} ms ({bound}), seed {seed}",
    )
    for i, c in enumerate(result.best, 1):
        cells = [f"{c.objective / 1e6:.2f}", f"{c.latency_ms:.4g}", f"{c.bound_ms:.4g}"]
        table.add_row(str(i), c.network, *cells)
    console.print(table)
    if not result.best:
        err_console.print(f"[bold yellow]warning:[/] no network found within {budget_ms:g} ms")
    console.print(
        f"{result.evaluated} evaluations, {result.distinct} distinct networks, "
        f"cache hits {result.cache.get('hits', 0)}"
    )


# --------------------------------------------------------------------------- compare


def _comparison_table(metrics: dict[str, Any]) -> Table:
    """The main job's table: MAPE % / Spearman rho / within ±10 % per set (fits 80 columns)."""
    comp = metrics["comparison"]
    table = Table(
        "predictor",
        *(
            Column(f"{part} (n={v['networks']})\nMAPE / ρ / ±10 %", justify="right")
            for part, v in comp["sets"].items()
        ),
        title=f"Network latency predictors on {metrics['device']} (measured here)",
    )
    kind = None
    for name, row in comp["models"].items():
        if kind is not None and row["kind"] != kind:
            table.add_section()
        kind = row["kind"]
        cells = []
        for part in comp["sets"]:
            m = row.get(part) or {}
            cells.append(
                " / ".join(
                    "-" if m.get(k) is None else f"{m[k]:{spec}}"
                    for k, spec in (("mape", ".1f"), ("spearman", ".2f"), ("acc10", ".0f"))
                )
            )
        table.add_row(name, *cells)
    return table


@app.command()
def compare(
    quick: bool = typer.Option(False, "--quick", help="small suites, 5 zoo networks (~4 min)"),
    out: Path = typer.Option(
        Path(DEFAULT_COMPARE_OUT), "--out", help="report folder (outside the committed reports/)"
    ),
    db: str | None = typer.Option(
        None, "--db", help="measurement store: SQLite path or URL (default OUT/bench.db)"
    ),
    threads: int = typer.Option(1, "--threads", help="threads of the learned predictors"),
) -> None:
    """The headline comparison on this machine.

    Measures kernel benchmarks and generated, nb201 and zoo networks here, trains the
    layer-wise (roofline, refined, statistical, mixed, LUT) and learned (flops, gbm, rf, fcnn,
    gcn) predictors, evaluates them on held-out networks and on the zoo, and prints the
    table. Interrupted, it resumes from the store.
    """
    import time

    from rich.progress import TaskID

    from latlab.experiments.annette import main_job
    from latlab.fileio import prepare_output

    prepare_output(out, "--out", folder=True)
    if threads < 1:
        fail(f"--threads must be at least 1, got {threads}")
    command = "latlab compare" + "".join(
        [" --quick" if quick else "", f" --out {out}" if out != Path(DEFAULT_COMPARE_OUT) else ""]
        + ([f" --db {db}"] if db else [])
        + ([f" --threads {threads}"] if threads != 1 else [])
    )
    start = time.monotonic()
    tasks: dict[str, TaskID] = {}
    with _progress_bar(transient=False) as bars:

        def notify(description: str, done: int, total: int | None) -> None:
            if description not in tasks:
                tasks[description] = bars.add_task(description, total=total)
            bars.update(tasks[description], completed=done, total=total)

        metrics = main_job(out, quick=quick, db=db, threads=threads, command=command, notify=notify)
    console.print(_comparison_table(metrics))
    console.print(
        "layer-wise models first, then the kernel-level model, then the learned ones;"
        " generated = held-out generated cnn networks, nb201 = random nb201 networks, zoo ="
        " the zoo's real networks (out of distribution for the learned predictors), split"
        " into its CNNs (zoo-cnn) and attention models"
    )
    console.print(f"report: {out / 'report.md'}  ({time.monotonic() - start:.0f} s)")


def _setup_logging() -> None:
    """Library warnings (dropped table values, anchor drift) as rich lines on stderr."""
    root = logging.getLogger("latlab")
    if not any(isinstance(h, RichHandler) for h in root.handlers):
        handler = RichHandler(console=err_console, show_time=False, show_path=False)
        handler.setLevel(logging.WARNING)
        root.addHandler(handler)
        root.setLevel(logging.INFO)


# --------------------------------------------------------------------------- bnn

bnn_app = typer.Typer(
    no_args_is_help=True,
    help="Binary networks: XNOROP/LXNOROP inference-rate estimation (forward, inverse tasks).",
)
app.add_typer(bnn_app, name="bnn")


def _bnn_warn(warnings: Any) -> None:
    for w in warnings:
        err_console.print(f"[bold yellow]warning:[/] {w}", highlight=False, soft_wrap=True)


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


@bnn_app.command("forward")
def bnn_forward(
    network: str = typer.Argument(..., help="network reference, e.g. bnn-fcnn:784-512-512-10"),
    target: str = typer.Option(..., "--target", "-t", help="catalog name, 'host' or a target file"),
    bus: int | None = typer.Option(None, "--bus", help="override the bus width (8..256 bits)"),
    catalog: Path | None = typer.Option(None, "--catalog", help="device catalog JSON"),
    layers: bool = typer.Option(False, "--layers", help="also print the cost of every layer"),
    as_json: bool = typer.Option(False, "--json", help="print JSON (per-layer costs included)"),
) -> None:
    """Forward task: the inference rate of NETWORK on a target, and whether it fits in memory."""
    from latlab.predictors.bnn import forward

    res = forward(network, target, bus_width=bus, catalog=catalog, warn=False)
    _bnn_warn(res.warnings)
    if as_json:
        console.print_json(json.dumps(res.as_dict()))
        return
    m = res.memory
    limit = _bytes(res.memory_limit_bytes) + (
        f" RAM + {_bytes(res.storage_limit_bytes)} storage" if res.storage_limit_bytes else ""
    )
    console.print(
        f"[bold]{res.network}[/] on [bold]{res.target}[/] (Bus {res.bus_width} bit, "
        f"CP {res.cp_hz / 1e6:.0f} MHz)\n"
        f"  rate        {res.fps:.4g} fps ({res.latency_ms:.4g} ms)\n"
        f"  XNOROPs     {res.xnorops:,}   LXNOROPs {res.lxnorops:,.0f}   "
        f"Clocks_XNOROP {res.clocks_xnorop:.3g}   Clocks_LXNOROP {res.clocks_lxnorop:.3g}\n"
        f"  memory      {_bytes(m.total_bytes)} (weights {_bytes(m.weights_bytes)}, "
        f"activations {_bytes(m.activations_bytes)}, other {_bytes(m.other_bytes)}) "
        f"of {limit}: {'fits' if res.fits else '[red]does not fit[/]'}",
        highlight=False,
    )
    if layers:
        from rich.table import Table

        table = Table()
        for col in ("layers", "op", "XNOROPs", "MACs", "clocks", "share"):
            table.add_column(col, justify="left" if col in ("layers", "op") else "right")
        for r in res.layers:
            table.add_row(
                " + ".join(r["layers"]),
                r["op"],
                f"{r['xnorops']:,}",
                f"{r['macs']:,}",
                f"{r['clocks']:,.0f}",
                f"{100 * r['share']:.1f} %",
            )
        console.print(table)


@bnn_app.command("inverse")
def bnn_inverse(
    network: str = typer.Argument(..., help="network reference"),
    fps: float = typer.Option(..., "--fps", help="required inference rate (frames/s, > 0)"),
    catalog: Path | None = typer.Option(None, "--catalog", help="device catalog JSON"),
    show_all: bool = typer.Option(False, "--all", help="also list the rejected targets"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Inverse task: the catalog targets that reach --fps and hold NETWORK, by margin."""
    from latlab.predictors.bnn import inverse

    res = inverse(network, fps, catalog=catalog, warn=False)
    _bnn_warn(res.warnings)
    if as_json:
        console.print_json(json.dumps(res.as_dict()))
        return
    from rich.table import Table

    table = Table(title=f"{res.network} at >= {res.required_fps:g} fps")
    for col in ("target", "fps", "x required", "memory", "RAM", "why not"):
        table.add_column(col, justify="left" if col in ("target", "why not") else "right")
    rows = list(res.matches) + (list(res.rejected) if show_all else [])
    for m in rows:
        table.add_row(
            m.target,
            f"{m.fps:.4g}",
            f"{m.fps / res.required_fps:.3g}",
            _bytes(m.memory_bytes),
            _bytes(m.memory_limit_bytes),
            m.reason,
        )
    console.print(table)
    console.print(
        f"{len(res.matches)} target(s) qualify, {len(res.rejected)} do not"
        + ("" if show_all else " (--all lists them)"),
        highlight=False,
    )


@bnn_app.command("targets")
def bnn_targets(
    catalog: Path | None = typer.Option(None, "--catalog", help="device catalog JSON"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """List the device catalog (validated)."""
    from latlab.predictors.bnn import load_catalog

    targets = load_catalog(catalog)
    if as_json:
        console.print_json(json.dumps([t.to_dict() for t in targets]))
        return
    from rich.table import Table

    table = Table()
    for col in ("name", "bus", "cores x MHz", "RAM", "Clocks_LXNOROP", "title"):
        table.add_column(col)
    for t in targets:
        table.add_row(
            t.name,
            str(t.bus_width),
            f"{t.cores} x {t.freq_hz[0] / 1e6:.0f}",
            _bytes(t.memory_bytes),
            f"{t.clocks_lxnorop:.3g}",
            t.title,
        )
    console.print(table)


@bnn_app.command("calibrate")
def bnn_calibrate(
    out: Path = typer.Option(..., "--out", "-o", help="target file to write (JSON)"),
    quick: bool = typer.Option(False, "--quick", help="small benchmark suite (~10 s)"),
    threads: int = typer.Option(1, "--threads", help="threads of the bit-packed backend"),
    rounds: int = typer.Option(3, "--rounds", help="passes over the suite (median kept)"),
    clock: str = typer.Option("auto", "--clock", help="auto, wall or thread CPU time"),
    name: str = typer.Option("host-calibrated", "--name", help="name of the written target"),
) -> None:
    """Fit this machine's LXNOROP constants from bit-packed micro-benchmarks; write a target."""
    from rich.progress import Progress

    from latlab.fileio import prepare_output
    from latlab.predictors.bnn import write_target
    from latlab.predictors.bnn.calibrate import calibrate

    prepare_output(out, "--out")  # like every command: checked now, folders made on writing
    with Progress(console=err_console, transient=True) as bar:
        task = bar.add_task("calibrating", total=None)

        def progress(i: int, n: int, what: str) -> None:
            bar.update(task, completed=i, total=n, description=what[:40])

        cal = calibrate(
            quick=quick, threads=threads, rounds=rounds, clock=clock, name=name, progress=progress
        )
    write_target(cal.target, out)
    t = cal.target
    console.print(
        f"wrote {out}: Clocks_XNOROP {t.clocks_xnorop:.3g}, Clocks_LXNOROP "
        f"{t.clocks_lxnorop:.3g}, c_mac {t.clocks_mac:.3g}, c_layer {t.clocks_layer:.3g} clocks "
        f"(fit median error {100 * t.calibration['fit_median_rel_error']:.1f} % over "
        f"{t.calibration['benchmarks']} benchmarks)",
        highlight=False,
    )


# --------------------------------------------------------------------------- experiment

experiment_app = typer.Typer(
    no_args_is_help=True,
    help="Reproducible experiments: a report directory (report.md, PNG plots, metrics.json).",
)
app.add_typer(experiment_app, name="experiment")


@experiment_app.command("list")
def experiment_list() -> None:
    """The experiments, what they need and how long they take."""
    from latlab.experiments.registry import EXPERIMENTS

    table = Table(Column("name", no_wrap=True), "needs --data", "full run", "--quick", "what")
    for e in EXPERIMENTS.values():
        table.add_row(
            e.name,
            "nb201 table" if e.needs_data else "",
            e.full_duration,
            e.quick_duration,
            e.summary,
        )
    console.print(table)


@experiment_app.command("run")
def experiment_run(
    name: str = typer.Argument(..., help="experiment name (latlab experiment list)"),
    quick: bool = typer.Option(False, "--quick", help="the short variant (minutes, for CI)"),
    out: Path | None = typer.Option(
        None, "--out", help="report directory (default reports/NAME or reports/NAME-quick)"
    ),
    data: Path | None = typer.Option(
        None, "--data", help="the NAS-Bench-201 latency table, for the experiments needing it"
    ),
    seed: int = typer.Option(0, "--seed", help="first seed"),
    threads: int = typer.Option(1, "--threads", help="threads of torch/LightGBM/onnxruntime"),
    report_only: bool = typer.Option(
        False, "--report-only", help="fit nothing: report the finished runs (brp-nas)"
    ),
    experiment: str | None = typer.Option(None, "--experiment", help="MLflow experiment"),
    no_mlflow: bool = typer.Option(False, "--no-mlflow", help="do not log to MLflow"),
) -> None:
    """Run (or resume: re-run the same command) one experiment into its report directory."""
    from latlab.experiments.runner import check_data, default_out, run_experiment

    check_data(name, data)  # unknown name / missing --data: one line before anything starts
    out_dir = out if out is not None else default_out(name, quick)
    command = " ".join(["latlab", *sys.argv[1:]]) if sys.argv[1:2] == ["experiment"] else ""
    try:
        with _progress_bar() as bar:
            task = bar.add_task(name, total=None)

            def progress(what: str, done: int, total: int | None) -> None:
                bar.update(task, description=what[:60], completed=done, total=total)

            result = run_experiment(
                name,
                out=out_dir,
                quick=quick,
                data=data,
                seed=seed,
                threads=threads,
                command=command,
                tracker=_tracker(no_mlflow, experiment),
                progress=progress,
                report_only=report_only,
            )
    except KeyboardInterrupt:  # main() prints the one line: completed work is kept, re-run
        raise SystemExit(130) from None
    if result.summary:
        table = Table("figure", Column("value", justify="right"), title=f"{name} summary")
        for k, v in result.summary.items():
            table.add_row(str(k), v if isinstance(v, str) else f"{v:.4g}")
        console.print(table)
    console.print(f"report: {result.out / 'report.md'} ({result.seconds:.0f} s)", highlight=False)
    if result.run_id:
        console.print(f"MLflow run: {result.run_id}", highlight=False)


@app.command()
def verify(
    bundle: Path = typer.Argument(..., help="bundle folder to check"),
) -> None:
    """Check a bundle and its mlflow_model/ against the manifest's checksums (before `mlflow
    models serve`, which checks nothing itself)."""
    from latlab.training.bundle import load_bundle, verify_mlflow_model

    b = load_bundle(bundle)
    served = b.manifest.get("mlflow_model")
    if served:
        verify_mlflow_model(bundle)
    n = len(b.manifest.get("files") or {})
    what = " (mlflow_model/ included)" if served else " (no mlflow_model)"
    console.print(f"bundle {bundle}: {n} files match their checksums{what}", highlight=False)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: runs the app, turning user errors into one line and exit code 2."""
    _setup_logging()
    try:
        app(args=argv)  # standalone mode: usage errors print usage and exit 2
    except LatlabError as exc:
        fail(_one_based(str(exc).splitlines()[0]) if str(exc) else type(exc).__name__)
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        fail(f"{exc.strerror}: {exc.filename}")
    except KeyboardInterrupt:
        err_console.print(_INTERRUPTED)
        raise SystemExit(130) from None
    except SystemExit as exc:
        if exc.code == 130:  # click turns Ctrl-C into exit code 130 before we see it
            err_console.print(_INTERRUPTED)
        raise


_INTERRUPTED = "interrupted; completed work is saved and a re-run resumes it"


def _one_based(message: str) -> str:
    """The library counts rows from 0 (as the HTTP records and DataFrames do); on the command
    line the first REF, or the first data row, is row 1."""
    import re

    return re.sub(r"\brow (\d+)\b", lambda m: f"row {int(m.group(1)) + 1}", message)


if __name__ == "__main__":
    main()
