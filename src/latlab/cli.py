"""The ``latlab`` command: parses arguments, calls the library, prints with rich.

Kept thin: every command is a few lines around a library call. User errors
(:class:`latlab.errors.LatlabError`, and file/OS errors) become one red line on stderr and exit
code 2, never a traceback. Heavy imports (torch, mlflow, onnxruntime) happen inside the
commands that need them so that ``latlab --help`` stays fast.
"""

from __future__ import annotations

import typer
from rich.console import Console

from latlab.errors import LatlabError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="latlab: measure, model, compare and serve DNN inference latency predictors.",
)
console = Console()
err_console = Console(stderr=True)


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


def main(argv: list[str] | None = None) -> None:
    """Console entry point: runs the app, turning user errors into one line and exit code 2."""
    try:
        app(args=argv)  # standalone mode: usage errors print usage and exit 2
    except LatlabError as exc:
        fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        fail(f"{exc.strerror}: {exc.filename}")
    except KeyboardInterrupt:
        err_console.print("interrupted; completed work is saved and a re-run resumes it")
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
