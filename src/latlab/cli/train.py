"""``latlab`` commands on predictors: train, evaluate, predict, nas (and their shared parsing)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Column, Table

from latlab.cli.app import app, console, err_console, fail, progress_bar
from latlab.errors import LatlabError

if TYPE_CHECKING:
    pass


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


def make_tracker(no_mlflow: bool, experiment: str | None) -> Any:
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
        "split",
        "--conformal",
        help="split, cm-tv, cm-lv, cm-o, cps, cv+, oob (rf only), sources (transfer only) or none",
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
    with progress_bar(elapsed=False) as bar:
        task = bar.add_task("loading", total=None)

        def progress(stage: str, done: int | None, total: int | None) -> None:
            label = {"tune": "tuning (trials)"}.get(stage, stage)
            bar.update(task, description=label, completed=done or 0, total=total)

        result = run_train(
            data,
            target,
            config,
            out,
            tracker=make_tracker(no_mlflow, experiment),
            progress=progress,
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
        bundle, data, target, confidence, tracker=make_tracker(no_mlflow, experiment), min_ms=min_ms
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
    from latlab.predictors.base import LayerPredictor
    from latlab.training.bundle import load_bundle
    from latlab.training.pipeline import predict as run_predict

    _check_confidence_option(confidence)
    b = load_bundle(bundle)
    frame = run_predict(b, refs, confidence, tracker=make_tracker(no_mlflow, experiment))
    per = None
    if (layers or as_json) and isinstance(b.predictor, LayerPredictor):
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
    with progress_bar(eta=True) as bar:
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
