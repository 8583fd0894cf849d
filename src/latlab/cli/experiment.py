"""``latlab experiment``: list and run the registered experiments."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Column, Table

from latlab.cli.app import app, console, progress_bar
from latlab.cli.train import make_tracker

if TYPE_CHECKING:
    pass


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
        with progress_bar() as bar:
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
                tracker=make_tracker(no_mlflow, experiment),
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
