"""``latlab compare``: the headline comparison (the ANNETTE experiment's main preset)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Column, Table

from latlab.cli.app import DEFAULT_COMPARE_OUT, app, console, fail, progress_bar

if TYPE_CHECKING:
    pass


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
    with progress_bar(transient=False) as bars:

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
