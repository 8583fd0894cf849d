"""The contract between ``latlab experiment run`` and the experiments it runs.

Each experiment is a module with one function ``experiment(ctx: ExperimentContext) ->
dict``: it writes its report into ``ctx.out`` (``report.md`` and PNG plots, plus any CSV or
resume files it wants) and returns its metrics, a JSON-able dict. The runner (not the
experiment) checks ``--data``, writes ``metrics.json`` atomically, logs the run to MLflow and
prints where the report is, so that every experiment is run, resumed and tracked the same way.
An experiment resumes from files it keeps in ``ctx.out``: re-running the same command after an
interruption continues where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

#: ``progress(description, done, total)``; ``total`` None while unknown.
Progress = Callable[[str, int, int | None], None]


def _no_progress(description: str, done: int, total: int | None) -> None:
    """The default: no progress display (tests, library calls)."""


@dataclass(frozen=True)
class ExperimentContext:
    """What one run of an experiment is given.

    ``out`` exists when the experiment starts. ``data`` is the external latency table
    (``--data``), always set for experiments registered as needing one. ``threads`` bounds
    the threads of every library the experiment uses (LightGBM, torch, onnxruntime), because
    thread pools oversubscribe a shared 2-core machine. ``command`` is the command line that
    started the run, for the report's "how to repeat" line.
    """

    out: Path
    quick: bool = False
    data: Path | None = None
    seed: int = 0
    threads: int = 1
    command: str = ""
    progress: Progress = field(default=_no_progress)
    #: ``--report-only``: run nothing new, report what the resume files in ``out`` hold
    #: (only for experiments registered with ``report_only=True``).
    report_only: bool = False
