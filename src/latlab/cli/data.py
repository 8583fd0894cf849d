"""``latlab`` commands on networks and measurements: version, encode, measure, bench,
quantize, table."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Column, Table

from latlab.cli.app import (
    DEFAULT_REFERENCE_REF,
    app,
    console,
    err_console,
    fail,
    parse_threads,
    progress_bar,
)

if TYPE_CHECKING:
    from latlab.datasets.measure.protocol import CampaignResult, MeasureConfig


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
    group: int = typer.Option(
        1, "--group", min=1, help="networks timed together beside one reference block per round"
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
    from latlab.datasets.references import canonical_reference
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
    if ref_net is None and (value == "corrected" or reestablish or strict_reference or group > 1):
        fail(
            "--value corrected, --group and the reference options need a reference "
            "(drop --no-reference)"
        )
    shape = parse_input_shape(input_shape)
    references = list(refs) if refs else sample(str(space), int(count or 0), seed)
    _check_references(references, batch, shape)
    # the spelling the store keys each network by (the table lists what was measured)
    references = list(dict.fromkeys(canonical_reference(r) for r in references))
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
        group=group,
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
    with progress_bar(eta=True, current=True) as bar:
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
            # Name the float kernels: a float kernel whose MACs the profile does not count
            # (ConvTranspose) makes a network mixed at "100 % of MACs in int8 kernels".
            float_kernels = sorted(ex.get("float_kernels", {}).items())
            floats = ", ".join(f"{op.rsplit('.', 1)[-1]} x{n}" for op, n in float_kernels)
            err_console.print(
                f"[yellow]mixed precision:[/] {m.network} runs {prec['label']} "
                f"({100 * float(frac or 0.0):.1f} % of counted MACs {where}"
                + (f"; float kernels: {floats}" if floats else "")
                + ")",
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


def _bench_alternatives(config: Any) -> dict[str, str]:
    """Protocol keys of the other clocks and group sizes ``latlab bench`` (and ``latlab
    compare``: thread clock, groups of 4) measure with, each with the options that select it,
    so that an export that finds nothing under ``config`` says which options would."""
    from dataclasses import replace

    from latlab.experiments.annette_settings import GROUP

    out: dict[str, str] = {}
    for timer in ("wall", "thread"):
        if timer == "thread" and config.threads != 1:
            continue
        for group in sorted({1, GROUP}):
            alt = replace(config, timer=timer, group=group)
            if alt != config and config.reference is not None:
                out[alt.protocol_key()] = f"--timer {timer} --group {group}"
            elif alt != config and group == 1:
                out[alt.protocol_key()] = f"--timer {timer}"
    return out


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
        "padded",
        "--method",
        help="layer time in the DEVICE column: padded (fp32 only), single or profile",
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
    group: int = typer.Option(
        1, "--group", min=1, help="benchmarks timed together beside one reference block per round"
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
    if no_reference and group > 1:
        fail("--group needs a reference (drop --no-reference)")
    _check_precision(precision, "onnxruntime")
    if precision != "fp32" and export is not None and method == "padded":
        fail(
            f"--method padded has no {precision} table (the padding suite runs at fp32 only: "
            "its padding-only models stay float when quantised); export with --method single "
            "or --method profile"
        )
    if precision != "fp32" and suite is not None and not (suite in PRECISION_SUITES or run_all):
        fail(f"--precision {precision} benchmarks the suites {', '.join(PRECISION_SUITES)}")
    ref_net = None if no_reference else (reference or BENCH_PAIRED.reference)
    config = replace(
        BENCH_PAIRED,
        timer=timer,
        threads=threads,
        reference=ref_net,
        precision=precision,
        group=group,
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
        with progress_bar(eta=True, current=True) as bar:
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
            table = training_table(
                store,
                device,
                method=method,
                protocol_key=config.protocol_key(),
                other_protocols=_bench_alternatives(config),
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
