"""Shared test fixtures."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
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


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A PostgreSQL URL on a fresh schema (dropped afterwards); skipped without a server.

    The server is named by ``LATLAB_TEST_POSTGRES_URL`` (``.ci/run`` starts one and sets it).
    Each test gets its own schema through ``search_path``, so tests never see each other's rows.
    """
    base = os.environ.get("LATLAB_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("LATLAB_TEST_POSTGRES_URL is not set (no PostgreSQL server for this run)")
    import sqlalchemy as sa

    from latlab.datasets.store import normalise_url

    url = normalise_url(base)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(url)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    scoped = url.update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield scoped.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()
