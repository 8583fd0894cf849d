"""``latlab verify``: a bundle's checksums, before MLflow serves it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from latlab.cli.app import app, console

if TYPE_CHECKING:
    pass


@app.command()
def verify(
    bundle: Path = typer.Argument(..., help="bundle folder to check"),
) -> None:
    """Check a bundle and its mlflow_model/ against the manifest's checksums (before `mlflow
    models serve`, which checks nothing itself)."""
    from latlab.training.bundle import load_bundle, verify_mlflow_model

    b = load_bundle(bundle)
    served = b.manifest.get("mlflow_model")
    if served:
        verify_mlflow_model(bundle)
    n = len(b.manifest.get("files") or {})
    what = " (mlflow_model/ included)" if served else " (no mlflow_model)"
    console.print(f"bundle {bundle}: {n} files match their checksums{what}", highlight=False)
