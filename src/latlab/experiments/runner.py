"""Run one registered experiment the same way every time: check, run, save, track.

:func:`run_experiment` is what ``latlab experiment run NAME`` calls. It checks ``--data``
before anything is imported or written (an experiment that needs the nb201 table stops with a
one-line message saying what to pass), runs the experiment into its report directory, writes
``metrics.json`` atomically *after* the experiment returned (so a ``metrics.json`` is never
that of a half-finished run), and logs the run to MLflow: the run's settings as parameters,
every finite number of the metrics as a flattened metric, the report directory as artifacts.
Resuming is the experiment's job (files it keeps in the report directory); the runner only
makes re-running the same command the way to resume.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latlab.errors import DataError
from latlab.experiments.common import dump_json
from latlab.experiments.context import ExperimentContext, Progress
from latlab.experiments.registry import get_experiment
from latlab.fileio import prepare_output

log = logging.getLogger(__name__)

#: Files of a report directory never copied to MLflow (stores and caches can be GBs).
SKIP_ARTIFACT_SUFFIXES = (".db", ".db-journal", ".db-wal", ".db-shm", ".tmp")
MAX_ARTIFACT_BYTES = 50 * 1024 * 1024
#: MLflow accepts alphanumerics, ``_ - . / `` and spaces in metric names.
_BAD_METRIC_CHARS = re.compile(r"[^0-9A-Za-z_\-./ ]")


@dataclass
class ExperimentResult:
    """What one run produced."""

    name: str
    out: Path
    metrics: dict[str, Any]
    seconds: float
    run_id: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)


def default_out(name: str, quick: bool) -> Path:
    """``reports/NAME`` (``reports/NAME-quick`` for ``--quick``)."""
    return Path("reports") / (f"{name}-quick" if quick else name)


def check_data(name: str, data: str | Path | None) -> Path | None:
    """The ``--data`` path an experiment gets, checked; one-line errors name what to pass."""
    exp = get_experiment(name)
    if exp.needs_data is None:
        return Path(data) if data is not None else None
    if data is None or not str(data).strip():
        raise DataError(exp.missing_data_message())
    path = Path(data)
    if not path.exists():
        raise DataError(f"--data {path}: no such file ({name} needs {exp.needs_data})")
    if path.is_dir():
        raise DataError(f"--data {path} is a directory: pass the table file ({exp.needs_data})")
    return path


def flat_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Every finite number of a nested metrics dict as ``a.b.c`` -> float (lists skipped)."""
    import math

    from latlab.training.tracking import flatten

    return {
        _BAD_METRIC_CHARS.sub("_", key): float(v)
        for key, v in flatten(prefix, dict(metrics)).items()
        if isinstance(v, int | float) and math.isfinite(float(v))  # bools count as 0/1
    }


def summary_of(metrics: Mapping[str, Any], limit: int = 12) -> dict[str, Any]:
    """The headline figures: the experiment's ``summary`` entry, else the first numbers."""
    summary = metrics.get("summary")
    if isinstance(summary, Mapping) and summary:
        return dict(summary)
    flat = flat_metrics({k: v for k, v in metrics.items() if k not in ("config", "environment")})
    return dict(list(flat.items())[:limit])


def _log_to_mlflow(tracker: Any, ctx: ExperimentContext, name: str, metrics: dict) -> None:
    tracker.log_params(
        {
            "experiment": name,
            "quick": ctx.quick,
            "data": str(ctx.data) if ctx.data else "",
            "seed": ctx.seed,
            "threads": ctx.threads,
            "out": str(ctx.out),
            "command": ctx.command,
        }
    )
    tracker.log_metrics(flat_metrics(metrics))
    if not tracker.enabled:
        return
    for path in sorted(ctx.out.rglob("*")):
        if not path.is_file() or path.name.startswith("."):
            continue
        if path.name.endswith(SKIP_ARTIFACT_SUFFIXES) or path.stat().st_size > MAX_ARTIFACT_BYTES:
            continue
        rel = path.parent.relative_to(ctx.out)
        tracker.mlflow.log_artifact(
            str(path), artifact_path="report" + ("" if str(rel) == "." else f"/{rel}")
        )


def run_experiment(
    name: str,
    *,
    out: str | Path | None = None,
    quick: bool = False,
    data: str | Path | None = None,
    seed: int = 0,
    threads: int = 1,
    command: str = "",
    tracker: Any = None,
    progress: Progress | None = None,
    report_only: bool = False,
) -> ExperimentResult:
    """Run (or resume) experiment ``name``; returns where its report is and its metrics.

    ``tracker`` is a :class:`latlab.training.tracking.Tracker` (None: no MLflow logging).
    Raises :class:`DataError` for an unknown name or a missing/bad ``--data`` before any file
    is written.
    """
    exp = get_experiment(name)
    data_path = check_data(name, data)
    if report_only and not exp.report_only:
        raise DataError(f"{name} has no --report-only mode (it always reports what it ran)")
    if threads < 1:
        raise DataError(f"--threads must be >= 1, got {threads}")
    out_dir = prepare_output(
        Path(out) if out is not None else default_out(name, quick), "--out", folder=True
    )
    func = exp.load()
    created = _missing_folders(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = ExperimentContext(
        out=out_dir,
        quick=quick,
        data=data_path,
        seed=seed,
        threads=threads,
        command=command or _command(name, out_dir, quick, data_path, seed, threads),
        report_only=report_only,
        **({"progress": progress} if progress is not None else {}),
    )
    if tracker is None:
        from latlab.training.tracking import Tracker

        tracker = Tracker(enabled=False)
    t0 = time.perf_counter()
    try:
        with tracker.run(
            f"{name}{'-quick' if quick else ''}", tags={"latlab.command": "experiment run"}
        ):
            metrics = func(ctx)
            seconds = time.perf_counter() - t0
            if not isinstance(metrics, dict):
                raise DataError(f"experiment {name} returned {type(metrics).__name__}, not a dict")
            metrics = {**metrics, "runner": {"seconds": seconds, "command": ctx.command}}
            dump_json(out_dir / "metrics.json", metrics)
            _log_to_mlflow(tracker, ctx, name, metrics)
    except BaseException:
        # A run that failed before writing anything leaves no empty report folder behind
        # (folders with finished work stay: the same command resumes from them).
        _remove_empty(created)
        raise
    return ExperimentResult(
        name=name,
        out=out_dir,
        metrics=metrics,
        seconds=seconds,
        run_id=tracker.run_id,
        summary=summary_of(metrics),
    )


def _missing_folders(path: Path) -> list[Path]:
    """``path`` and those of its parents that do not exist yet, deepest first."""
    missing = []
    for p in (path, *path.parents):
        if p.exists():
            break
        missing.append(p)
    return missing


def _remove_empty(folders: list[Path]) -> None:
    """Remove the folders this run created, deepest first, where they are still empty."""
    for folder in folders:
        for root, _dirs, _files in sorted(os.walk(folder), key=lambda w: -len(w[0])):
            with contextlib.suppress(OSError):
                os.rmdir(root)  # only succeeds on an empty folder


def _command(name: str, out: Path, quick: bool, data: Path | None, seed: int, threads: int) -> str:
    parts = ["latlab experiment run", name]
    if quick:
        parts.append("--quick")
    if data is not None:
        parts.append(f"--data {data}")
    parts.append(f"--out {out}")
    if seed:
        parts.append(f"--seed {seed}")
    if threads != 1:
        parts.append(f"--threads {threads}")
    return " ".join(parts)
