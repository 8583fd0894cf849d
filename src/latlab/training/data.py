"""Training data: one device's valid (network, latency) pairs from a table file or a store.

``latlab train --data DATA`` accepts a dataset table (CSV/Parquet: ``network`` + latency
columns in ms) or a measurement store URL (``sqlite:///...``, ``postgresql://...``, or a
``.db``/``.sqlite`` file). Both go through the table validation of
:mod:`latlab.datasets.tables`, which drops invalid latencies (text, missing, inf, <= 0, near
zero) *and reports them*: training never sees a failed measurement silently.

The dataset hash identifies the exact pairs a model was fitted or evaluated on (references and
latencies, order-independent), whatever file or store they came from, so that MLflow runs and
bundles can be traced to their data.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from latlab.datasets.tables import NETWORK, LatencyTable, MinMs, load_table, validate_frame
from latlab.errors import DataError

log = logging.getLogger(__name__)

#: File suffixes read as a measurement store rather than a table.
STORE_SUFFIXES = (".db", ".sqlite", ".sqlite3")


def is_store(data: str | Path) -> bool:
    """Whether ``data`` names a measurement store (a URL or a SQLite file) rather than a table."""
    text = str(data)
    return "://" in text or Path(text).suffix.lower() in STORE_SUFFIXES


def _sanitise_url(url: str) -> str:
    """A store URL without its password (for logs, manifests and MLflow)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL: a path
        return url


@dataclass
class Source:
    """A loaded, validated table and where it came from (a table file or a store)."""

    table: LatencyTable
    source: str
    kind: str  # "table" or "store"
    fingerprints: dict[str, Any] = field(default_factory=dict)

    @property
    def devices(self) -> list[str]:
        return self.table.devices


def load_source(data: str | Path, min_ms: MinMs = None) -> Source:
    """Load and validate ``data`` (table file or store URL); raises :class:`DataError`.
    ``min_ms``: the floor below which latencies are dropped (see :mod:`latlab.datasets.tables`;
    none by default)."""
    if is_store(data):
        from latlab.datasets.store import Store

        text = str(data)
        if "://" not in text and not Path(text).exists():
            raise DataError(f"store file not found: {text}")
        store = Store(text)
        try:
            # drift-corrected medians where every measurement has one (a paired store: the
            # scale its benchmarks' kernel times are on too), else the raw ones
            stored = store.measurements()
            paired = not stored.empty and bool(stored["corrected_ms"].notna().all())
            frame = store.export_table(value="corrected" if paired else "raw")
            devices = store.devices()
        finally:
            store.close()
        source = _sanitise_url(text)
        if frame.empty or len(frame.columns) < 2:
            raise DataError(f"store {source} holds no measurements")
        table = validate_frame(frame, f"store {source}", min_ms)
        fingerprints = {
            str(row["name"]): {"backend": row["backend"], "fingerprint": row["fingerprint"]}
            for _, row in devices.iterrows()
        }
        return Source(table, source, "store", fingerprints)
    path = Path(data)
    return Source(load_table(path, min_ms), str(path), "table")


@dataclass
class TrainingData:
    """One device column's valid rows: references and latencies in ms, and their provenance."""

    networks: list[str]
    latency_ms: np.ndarray
    target: str
    source: str
    kind: str = "table"
    dropped: dict[str, int] = field(default_factory=dict)
    device_info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.networks)

    @property
    def dataset_hash(self) -> str:
        return dataset_hash(self.networks, self.latency_ms)

    def subset(self, index: Sequence[int] | np.ndarray) -> tuple[list[str], np.ndarray]:
        """References and latencies of the rows at ``index``."""
        idx = np.asarray(index, dtype=int)
        return [self.networks[i] for i in idx], self.latency_ms[idx]

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({NETWORK: self.networks, "latency_ms": self.latency_ms})


def training_data(source: Source, target: str) -> TrainingData:
    """The valid rows of column ``target`` (raises :class:`DataError` naming a missing column)."""
    valid = source.table.valid(target)
    report = source.table.report_dict().get(target, {})
    not_reasons = ("rows", "valid", "quantised", "dropped", "suspect", "conflicts")
    dropped = {k: int(v) for k, v in report.items() if k not in not_reasons and v}
    if valid.empty:
        raise DataError(f"column {target!r} of {source.source} has no valid latency")
    return TrainingData(
        networks=[str(n) for n in valid[NETWORK]],
        latency_ms=valid["latency_ms"].to_numpy(dtype=float),
        target=target,
        source=source.source,
        kind=source.kind,
        dropped=dropped,
        device_info=source.fingerprints.get(target, {}),
    )


def load_training_data(data: str | Path, target: str, min_ms: MinMs = None) -> TrainingData:
    """:func:`load_source` then :func:`training_data` (the common one-column case)."""
    return training_data(load_source(data, min_ms), target)


def dataset_hash(networks: Sequence[str], latency_ms: Any) -> str:
    """SHA-256 (hex) of the sorted ``reference<TAB>latency`` pairs.

    Latencies enter with 17 significant digits (``repr`` of a float64), so equal values read
    from CSV, Parquet or a store hash alike and any change of a value changes the hash.
    """
    y = np.asarray(latency_ms, dtype=float).reshape(-1)
    if len(networks) != len(y):
        raise DataError(f"{len(networks)} networks but {len(y)} latencies: lengths must match")
    lines = sorted(f"{n}\t{float(v)!r}" for n, v in zip(networks, y, strict=True))
    h = hashlib.sha256()
    for line in lines:
        h.update(line.encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()
