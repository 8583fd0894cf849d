"""MLflow tracking of train / tune / evaluate / predict runs.

The tracking URI is ``MLFLOW_TRACKING_URI`` when set, else a SQLite file ``mlflow.db`` in the
working directory (an absolute ``sqlite:///`` URI, so that ``mlflow ui`` started in the same
folder -- ``mlflow ui --backend-store-uri sqlite:///mlflow.db`` -- shows the runs). Each run
records parameters, metrics, the dataset (hash, size, source) as an MLflow dataset input, the
device column and fingerprint, the training environment, plots (predicted vs measured,
relative-error histogram), Optuna trials as nested runs, and the bundle as an MLflow pyfunc
model (:mod:`latlab.training.mlflow_pyfunc`).

``mlflow`` is imported only when a :class:`Tracker` is enabled (it costs about a second).
A disabled tracker (``--no-mlflow``) accepts every call and does nothing.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from latlab.errors import TrackingError, first_line

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "latlab"
DEFAULT_DB = "mlflow.db"
#: Metrics per MLflow call (its batch limit is 1000).
_METRIC_CHUNK = 500
#: MLflow refuses parameter values longer than this (6000 in MLflow 2.x/3.x); longer ones are cut.
MAX_PARAM_CHARS = 6000


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI``, else ``sqlite:///<cwd>/mlflow.db`` (absolute)."""
    env = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if env:
        return env
    return f"sqlite:///{(Path.cwd() / DEFAULT_DB).resolve()}"


#: Seconds to wait for a tracking server's TCP port before giving up (MLflow's own client
#: retries for minutes, silently).
CONNECT_TIMEOUT_S = 3.0


def check_reachable(uri: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """For an ``http(s)://`` tracking URI, open (and close) one TCP connection to its host and
    port within ``timeout`` seconds; raises :class:`TrackingError` saying what was tried.
    Other URIs (SQLite files, databases, ``file:``) are left to MLflow."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https"):
        return
    host = parts.hostname or ""
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise TrackingError(f"malformed MLflow tracking URI {uri!r}: bad port") from None
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        why = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise TrackingError(
            f"cannot reach the MLflow tracking server {uri} (tried {host}:{port} for "
            f"{timeout:g} s: {why}); start it, set MLFLOW_TRACKING_URI, or pass --no-mlflow"
        ) from None


def _set_tracking_uri(mlflow: Any, uri: str) -> None:
    """``mlflow.set_tracking_uri`` without its side effect on ``os.environ``: MLflow also writes
    the URI into ``MLFLOW_TRACKING_URI``, so one Tracker with an explicit ``uri`` would become
    the default of every later ``Tracker()`` (and of the user's other code) in the process."""
    key = "MLFLOW_TRACKING_URI"
    previous = os.environ.get(key)
    mlflow.set_tracking_uri(uri)
    if previous is None:
        os.environ.pop(key, None)
    else:
        os.environ[key] = previous


def _create_beside_store(mlflow: Any, uri: str, name: str) -> None:
    """Create a missing experiment of a local SQLite store with its artifacts beside the
    database (``<db folder>/mlruns``). MLflow's default is ``./mlruns`` of whatever folder
    the process runs in: a store in a temporary folder (the tests') would still write
    artifacts into the working directory (the checkout)."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return
    db = Path(uri[len(prefix) :].split("?", 1)[0])
    if not db.parent.is_dir() or mlflow.get_experiment_by_name(name) is not None:
        return
    mlflow.create_experiment(name, artifact_location=(db.parent / "mlruns").resolve().as_uri())


def _first_use_lock(uri: str) -> contextlib.AbstractContextManager[Any]:
    """An inter-process lock around a local SQLite store's first use (``<db>.lock``).

    MLflow creates and migrates the tables of a new SQLite store, and creates a missing
    experiment, without coordination: four parallel workers (``--tune`` with several Optuna
    workers, each logging to the default ``mlflow.db``) starting on a fresh store failed three
    times in four with "table ... already exists" or alembic errors. Server and database URIs
    coordinate themselves; nothing is locked for them.
    """
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return contextlib.nullcontext()
    db = Path(uri[len(prefix) :].split("?", 1)[0])
    if not db.parent.is_dir():
        return contextlib.nullcontext()  # MLflow's own error names the missing folder
    from filelock import FileLock

    return FileLock(f"{db}.lock")


#: MLflow loggers that announce a new store's tables and a new experiment at INFO, in the
#: middle of latlab's own output (MLflow gives them their own handler: not ours to format).
_SETUP_LOGGERS = ("mlflow.store.db.utils", "mlflow.tracking.fluent", "alembic")


@contextlib.contextmanager
def _quiet(*names: str) -> Iterator[None]:
    """Raise the given loggers to WARNING for the duration of the block."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def flatten(prefix: str, value: Any, out: dict[str, Any] | None = None) -> dict[str, Any]:
    """Nested dicts to ``a.b.c`` keys (MLflow parameters are flat)."""
    out = {} if out is None else out
    if isinstance(value, Mapping):
        for k, v in value.items():
            flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value
    return out


class Tracker:
    """One MLflow run (and nested runs) of a latlab command; a no-op when disabled."""

    def __init__(
        self,
        enabled: bool = True,
        *,
        uri: str | None = None,
        experiment: str | None = None,
    ) -> None:
        self.enabled = enabled
        self.uri = uri or (tracking_uri() if enabled else "")
        self.experiment = (
            experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or (DEFAULT_EXPERIMENT)
        )
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self._mlflow: Any = None

    # -------------------------------------------------------------- setup

    @property
    def mlflow(self) -> Any:
        if self._mlflow is None:
            # No tqdm bars from artifact uploads/downloads in the middle of latlab's output.
            os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
            import mlflow

            self._mlflow = mlflow
        return self._mlflow

    def _connect(self) -> None:
        check_reachable(self.uri)
        mlflow = self.mlflow
        try:
            _set_tracking_uri(mlflow, self.uri)
            with _first_use_lock(self.uri), _quiet(*_SETUP_LOGGERS):
                _create_beside_store(mlflow, self.uri, self.experiment)
                exp = mlflow.set_experiment(self.experiment)
        except Exception as exc:
            raise TrackingError(
                f"cannot use MLflow tracking store {self.uri}: {first_line(exc)}"
            ) from None
        self.experiment_id = exp.experiment_id

    @contextlib.contextmanager
    def run(self, name: str, tags: Mapping[str, Any] | None = None) -> Iterator[Tracker]:
        """Start the command's run (ended as FAILED when the body raises)."""
        if not self.enabled:
            yield self
            return
        self._connect()
        mlflow = self.mlflow
        # A run left active by an interrupted caller in this process would make ours nested.
        while mlflow.active_run() is not None:
            mlflow.end_run()
        active = mlflow.start_run(run_name=name, tags={k: str(v) for k, v in (tags or {}).items()})
        self.run_id = active.info.run_id
        try:
            yield self
        except BaseException:
            mlflow.end_run(status="FAILED" if not _interrupted() else "KILLED")
            raise
        mlflow.end_run()

    @contextlib.contextmanager
    def nested(self, name: str, tags: Mapping[str, Any] | None = None) -> Iterator[Tracker]:
        """A nested run (one Optuna trial) under the current run."""
        if not self.enabled:
            yield self
            return
        mlflow = self.mlflow
        with mlflow.start_run(
            run_name=name, nested=True, tags={k: str(v) for k, v in (tags or {}).items()}
        ):
            yield self

    # -------------------------------------------------------------- logging

    def log_params(self, params: Mapping[str, Any], prefix: str = "") -> None:
        if not self.enabled:
            return
        flat = flatten(prefix, dict(params))
        clean = {k: _param_value(v) for k, v in flat.items()}
        # log_params refuses to overwrite a parameter with another value: log new keys only.
        active = self.mlflow.active_run()
        if active is not None:
            existing = self.mlflow.get_run(active.info.run_id).data.params
            clean = {k: v for k, v in clean.items() if k not in existing}
        if clean:
            self.mlflow.log_params(clean)

    def log_metrics(self, metrics: Mapping[str, Any], prefix: str = "", step: int | None = None):
        if not self.enabled:
            return
        clean = {}
        for k, v in flatten(prefix, dict(metrics)).items():
            if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating):
                continue
            if math.isfinite(float(v)):
                clean[k.replace(":", "_")] = float(v)
        items = list(clean.items())
        for i in range(0, len(items), _METRIC_CHUNK):  # MLflow refuses batches over 1000
            self.mlflow.log_metrics(dict(items[i : i + _METRIC_CHUNK]), step=step)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if self.enabled:
            self.mlflow.set_tags({k: str(v)[:5000] for k, v in tags.items()})

    def log_dict(self, data: Any, artifact_file: str) -> None:
        if self.enabled:
            from latlab.jsonio import jsonable

            self.mlflow.log_dict(jsonable(data), artifact_file)

    def log_dataset(
        self,
        networks: list[str],
        latency_ms: Any,
        *,
        name: str,
        source: str,
        digest: str,
        context: str,
    ) -> None:
        """The dataset as an MLflow input (hash, size and source; the rows as its profile)."""
        if not self.enabled:
            return
        import pandas as pd

        df = pd.DataFrame({"network": networks, "latency_ms": np.asarray(latency_ms, float)})
        with warnings.catch_warnings():  # "source can be interpreted in multiple ways"
            warnings.simplefilter("ignore", UserWarning)
            try:
                ds = self.mlflow.data.from_pandas(
                    df, source=source, targets="latency_ms", name=name, digest=digest[:16]
                )
            except self.mlflow.exceptions.MlflowException:
                # MLflow resolves file paths and a few URL schemes, not database URLs: the
                # store URL then goes into the dataset's name and the run's parameters.
                ds = self.mlflow.data.from_pandas(
                    df, targets="latency_ms", name=f"{name} ({source})"[:500], digest=digest[:16]
                )
        self.mlflow.log_input(ds, context=context)

    def log_prediction_plots(self, y_true: Any, y_pred: Any, prefix: str) -> None:
        """Predicted vs measured (log-log) and the relative-error histogram, as figures."""
        if not self.enabled:
            return
        from latlab.training.plots import error_histogram, predicted_vs_measured

        for fig, name in (
            (predicted_vs_measured(y_true, y_pred, title=prefix), "predicted_vs_measured"),
            (error_histogram(y_true, y_pred, title=prefix), "relative_error_hist"),
        ):
            try:
                self.mlflow.log_figure(fig, f"plots/{prefix}_{name}.png")
            finally:
                import matplotlib.pyplot as plt

                plt.close(fig)

    def log_table(self, frame: Any, artifact_file: str) -> None:
        if self.enabled:
            self.mlflow.log_table(frame, artifact_file=artifact_file)

    def log_bundle(self, bundle_dir: Path, model_name: str = "model") -> str | None:
        """Log the bundle's files and the bundle as a pyfunc model; returns the model URI."""
        if not self.enabled:
            return None
        with warnings.catch_warnings():  # "add type hints to predict": the signature is explicit
            warnings.simplefilter("ignore", UserWarning)
            from latlab.training.mlflow_pyfunc import bundle_copy, log_bundle_model

        with scratch_dir() as tmp:  # the bundle's mlflow_model is logged as the model below
            self.mlflow.log_artifacts(str(bundle_copy(bundle_dir, tmp)), artifact_path="bundle")
        return log_bundle_model(bundle_dir, name=model_name)


def _interrupted() -> bool:
    import sys

    exc = sys.exc_info()[1]
    return isinstance(exc, KeyboardInterrupt)


def _param_value(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= MAX_PARAM_CHARS else text[: MAX_PARAM_CHARS - 3] + "..."


def copy_package_source(dest: Path) -> Path:
    """A copy of the ``latlab`` package source (no caches) for the pyfunc model's code path."""
    import latlab

    src = Path(latlab.__file__).resolve().parent
    target = dest / "latlab"
    shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return target


@contextlib.contextmanager
def scratch_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="latlab-mlflow-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)
