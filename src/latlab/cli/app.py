"""The ``latlab`` Typer app and what every command shares: consoles, ``fail``, ``--threads``
parsing, and the console entry point ``main`` (one-line errors, exit codes)."""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.logging import RichHandler

from latlab.errors import LatlabError

if TYPE_CHECKING:
    pass

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="latlab: measure, model, compare and serve DNN inference latency predictors.",
)


def wide(stream: Any) -> int | None:
    """Full width when output goes to a pipe or a file (rich would cut it at 80 columns and
    fold paths); the terminal's width otherwise (or COLUMNS when set)."""
    import os

    isatty = getattr(stream, "isatty", None)
    return None if os.environ.get("COLUMNS") or (isatty and isatty()) else 400


console = Console(width=wide(sys.stdout))
err_console = Console(stderr=True, width=wide(sys.stderr))

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


def progress_bar(
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


def setup_logging() -> None:
    """Library warnings (dropped table values, anchor drift) as rich lines on stderr."""
    root = logging.getLogger("latlab")
    if not any(isinstance(h, RichHandler) for h in root.handlers):
        handler = RichHandler(console=err_console, show_time=False, show_path=False)
        handler.setLevel(logging.WARNING)
        root.addHandler(handler)
        root.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: runs the app, turning user errors into one line and exit code 2."""
    setup_logging()
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
