"""``latlab bnn``: the binary-network latency models (forward, inverse, targets, calibrate)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from latlab.cli.app import app, console, err_console

if TYPE_CHECKING:
    pass


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
