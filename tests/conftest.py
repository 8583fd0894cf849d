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

#: The shared data folder: ``../shared/data`` beside the checkout, or ``LATLAB_SHARED_DATA``
#: (a worktree elsewhere points it at the development checkout's copy).
SHARED_DATA = Path(
    os.environ.get("LATLAB_SHARED_DATA")
    or Path(__file__).resolve().parents[1].parent / "shared" / "data"
)


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


# ----------------------------------------------------------------------------- training


@pytest.fixture(scope="session")
def fcnn_measured(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | str]:
    """A real measurement store of 80 FCNNs (onnxruntime, device ``cpu``) and its CSV table.

    Measured once per test session with a short protocol: noisy, but real latencies.
    """
    from latlab.datasets.measure import MeasureConfig
    from latlab.datasets.measure.protocol import measure_many
    from latlab.datasets.spaces import sample
    from latlab.datasets.store import Store
    from latlab.datasets.tables import save_table

    d = tmp_path_factory.mktemp("fcnn-measured")
    db = d / "store.db"
    config = MeasureConfig(repeats=15, min_repeats=5, time_budget_s=0.05, max_warmup=20)
    refs = sample("fcnn", 80, seed=7)
    store = Store(db)
    measure_many(refs, config, store, "cpu", anchor=None)
    table = store.export_table(devices=["cpu"])
    store.close()
    csv = d / "fcnn.csv"
    save_table(table, csv)
    return {"db": db, "url": f"sqlite:///{db}", "csv": csv}


@pytest.fixture(scope="session")
def nb201_small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """600 rows and three device columns of the shared nb201 table (skipped without it)."""
    path = SHARED_DATA / "nb201_latency.csv"
    if not path.exists():
        pytest.skip(f"shared data not found at {path} (only in the development checkout)")
    import pandas as pd

    frame = pd.read_csv(path).sample(600, random_state=0)
    out = tmp_path_factory.mktemp("nb201-small") / "nb201_small.csv"
    frame[["network", "titanx_32", "gold_6240", "pixel3"]].to_csv(out, index=False)
    return out


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow tracking store (SQLite in a temp dir) set as MLFLOW_TRACKING_URI."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        yield uri
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous


# ----------------------------------------------------------------------------- serving


def _gbm_bundle(data: Path, target: str, out: Path, trees: int, sizes: tuple[int, int, int]):
    """A calibrated (split conformal) LightGBM bundle trained through the public pipeline."""
    from latlab.training.pipeline import TrainConfig, train

    train_size, val_size, cal_size = sizes
    config = TrainConfig(
        predictor="gbm",
        params={"n_estimators": trees},
        train_size=train_size,
        val_size=val_size,
        cal_size=cal_size,
        conformal="split",
    )
    train(data, target, config, out)
    return out


@pytest.fixture(scope="session")
def fcnn_gbm_bundle(tmp_path_factory: pytest.TempPathFactory, fcnn_measured) -> Path:
    """A calibrated LightGBM bundle (with its mlflow_model) on the measured FCNNs: runs
    everywhere, CI included."""
    out = tmp_path_factory.mktemp("serve") / "fcnn-gbm"
    return _gbm_bundle(fcnn_measured["csv"], "cpu", out, 300, (50, 10, 20))


@pytest.fixture(scope="session")
def fcnn_refs(fcnn_measured: dict) -> list[str]:
    """The references of the measured FCNN table, in table order."""
    import pandas as pd

    return pd.read_csv(fcnn_measured["csv"])["network"].tolist()


@pytest.fixture(scope="session")
def nb201_gbm_bundle(tmp_path_factory: pytest.TempPathFactory, nb201_small: Path) -> Path:
    """A calibrated LightGBM bundle on 400 nb201 rows (titanx_32); skipped without the table."""
    out = tmp_path_factory.mktemp("serve") / "nb201-gbm"
    return _gbm_bundle(nb201_small, "titanx_32", out, 400, (400, 50, 100))
