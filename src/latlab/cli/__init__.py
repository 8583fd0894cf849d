"""The ``latlab`` command: parses arguments, calls the library, prints with rich.

Kept thin: every command is a few lines around a library call. User errors
(:class:`latlab.errors.LatlabError`, and file/OS errors) become one red line on stderr and exit
code 2, never a traceback. Heavy imports (torch, mlflow, onnxruntime) happen inside the
commands that need them so that ``latlab --help`` stays fast.

One module per command group, on the one Typer app of :mod:`latlab.cli.app`: :mod:`.data`
(version, encode, measure, bench, quantize, table), :mod:`.train` (train, evaluate, predict,
nas), :mod:`.compare`, :mod:`.bnn`, :mod:`.experiment`, :mod:`.verify`. Typer registers a
command when its module is imported, so the modules are imported here, in the order
``latlab --help`` lists them.
"""

# isort: off
from latlab.cli import data, train, compare, verify, bnn, experiment  # noqa: F401 (help order)

# isort: on
from latlab.cli.app import DEFAULT_COMPARE_OUT, app, main

__all__ = ["DEFAULT_COMPARE_OUT", "app", "main"]
