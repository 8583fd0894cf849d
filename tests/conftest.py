"""Shared test fixtures."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# torch-geometric writes generated files into the temp dir; keep them in one scratch folder.
_SCRATCH = Path(tempfile.gettempdir()) / "latlab-test-scratch"
_SCRATCH.mkdir(exist_ok=True)
os.environ.setdefault("TMPDIR", str(_SCRATCH))

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def nb201_table_path() -> Path:
    """The shared nb201 latency table; skipped where ../shared/data is absent (fresh clones)."""
    path = SHARED_DATA / "nb201_latency.csv"
    if not path.exists():
        pytest.skip(f"shared data not found at {path} (only in the development checkout)")
    return path
