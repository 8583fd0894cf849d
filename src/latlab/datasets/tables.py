"""Dataset tables: ``network`` + one latency column per device, in milliseconds (CSV/Parquet).

Loading validates every latency column and drops, per column, what is not a usable latency,
counting each reason so that nothing is dropped silently:

- ``text``: a value that is not a number (``"12ms"``, ``"n/a"``);
- ``missing``: empty cells and NaN;
- ``non_finite``: ``inf``;
- ``non_positive``: ``<= 0``;
- ``near_zero``: a positive value below ``near_zero_fraction`` (default 0.5 %) of the column's
  median, i.e. more than 200 times faster than the column's typical network. Such values are
  failed measurements (a run that returned at once), not fast networks. The rule was checked
  on the shared NAS-Bench-201 table: it flags exactly the 183 ``pixel3`` entries below 0.05 ms
  (failed runs; the next value is 0.059 ms) and nothing in the 12 other columns. Tables of
  spaces whose latencies legitimately span more than 200x (very wide FCNNs) can lower it, or
  pass 0 to switch it off;
- ``duplicate``: a network listed again (the first row is kept).

Rows are never dropped as a whole: a network with a failed measurement on one device keeps its
valid latencies on the others. ``LatencyTable.valid(column)`` gives one device's usable pairs.

What a table holds (raw or drift-corrected medians, per column the protocol key, reference
network and reference value) is written beside it as ``FILE.meta.json`` (:func:`save_table`,
from the frame's ``attrs["latlab"]``, which :meth:`Store.export_table` sets), not inside it:
the table stays a plain CSV/Parquet file any tool reads, and :func:`load_table` reads the
sidecar, where there is one, into ``LatencyTable.meta``.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from latlab.errors import DataError

log = logging.getLogger(__name__)
#: Drop reports already logged by this process (later loads of the same table log at DEBUG).
_REPORTED: set[str] = set()

NETWORK = "network"
REASONS = ("text", "missing", "non_finite", "non_positive", "near_zero")
NEAR_ZERO_FRACTION = 0.005
_NA_TOKENS = {"", "nan", "na", "n/a", "null", "none", "-"}


def _format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    raise DataError(f"unsupported table format {path.name!r}: use .csv or .parquet")


def _read(path: Path) -> pd.DataFrame:
    fmt = _format(path)
    if not path.exists():
        raise DataError(f"table file not found: {path}")
    if path.is_dir():
        raise DataError(f"table path is a folder, not a file: {path}")
    try:
        if fmt == "csv":
            # Everything as text first: the validation below decides what is a number.
            return pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
        return pd.read_parquet(path)
    except pd.errors.EmptyDataError:
        raise DataError(f"table {path} is empty") from None
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DataError(f"cannot read table {path}: {first}") from None


@dataclass
class ColumnCheck:
    """One column's validated values (NaN where dropped) and the count per drop reason."""

    values: pd.Series
    counts: dict[str, int]


def check_column(
    raw: pd.Series, near_zero_fraction: float = NEAR_ZERO_FRACTION, name: str = "column"
) -> ColumnCheck:
    """Coerce a column to float latencies and classify every invalid value (see module doc)."""
    if pd.api.types.is_numeric_dtype(raw) or pd.api.types.is_bool_dtype(raw):
        numbers = pd.to_numeric(raw, errors="coerce").astype(float)
        text = pd.Series(False, index=raw.index)
        missing = numbers.isna()
    else:
        as_text = raw.astype(str).str.strip()
        missing_token = raw.isna() | as_text.str.lower().isin(_NA_TOKENS)
        numbers = pd.to_numeric(as_text.where(~missing_token), errors="coerce").astype(float)
        text = numbers.isna() & ~missing_token
        missing = missing_token
    arr = numbers.to_numpy()
    finite = np.isfinite(arr)
    non_finite = pd.Series(~finite & ~np.isnan(arr), index=raw.index)
    non_positive = pd.Series(finite & (arr <= 0), index=raw.index)
    positive = finite & (arr > 0)
    median = float(np.median(arr[positive])) if positive.any() else np.nan
    near_zero = pd.Series(
        positive & (arr < near_zero_fraction * median) if near_zero_fraction > 0 else False,
        index=raw.index,
    )
    valid = pd.Series(positive, index=raw.index) & ~near_zero
    counts = {
        "text": int(text.sum()),
        "missing": int(missing.sum()),
        "non_finite": int(non_finite.sum()),
        "non_positive": int(non_positive.sum()),
        "near_zero": int(near_zero.sum()),
    }
    return ColumnCheck(numbers.where(valid), counts)


@dataclass
class LatencyTable:
    """A validated dataset table.

    ``data`` has the ``network`` column and one float column per device, NaN where a value
    was dropped; ``report`` has one row per device column with ``rows``, ``valid``, a count per
    drop reason, ``dropped`` and ``quantised`` (all valid values whole numbers: a coarse timer);
    ``duplicates`` counts repeated networks (first kept); ``meta`` is the table's metadata
    sidecar (``FILE.meta.json``: which value the columns hold), empty without one.
    """

    path: Path | None
    data: pd.DataFrame
    report: pd.DataFrame
    duplicates: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def devices(self) -> list[str]:
        """The latency columns, in file order."""
        return [c for c in self.data.columns if c != NETWORK]

    @property
    def networks(self) -> list[str]:
        return list(self.data[NETWORK])

    def __len__(self) -> int:
        return len(self.data)

    def valid(self, column: str) -> pd.DataFrame:
        """One device's usable rows: ``network``, ``latency_ms`` (dropped values excluded)."""
        if column not in self.devices:
            known = ", ".join(self.devices)
            where = f" in {self.path}" if self.path else ""
            raise DataError(f"no latency column {column!r}{where} (columns: {known})")
        out = self.data[[NETWORK, column]].dropna(subset=[column])
        return out.rename(columns={column: "latency_ms"}).reset_index(drop=True)

    def report_dict(self) -> dict[str, dict[str, int | bool]]:
        """The report as ``{column: {reason: count, ...}}`` (JSON-able)."""
        return {
            str(col): {k: (bool(v) if k == "quantised" else int(v)) for k, v in row.items()}
            for col, row in self.report.to_dict(orient="index").items()
        }

    def summary(self) -> str:
        """One line per column with drops, for logs and the CLI."""
        lines = []
        for col, row in self.report.iterrows():
            if row["dropped"]:
                parts = ", ".join(f"{r} {int(row[r])}" for r in REASONS if row[r])
                lines.append(
                    f"{col}: dropped {int(row['dropped'])} of {int(row['rows'])} ({parts})"
                )
        return "\n".join(lines)


def validate_frame(
    frame: pd.DataFrame,
    source: str = "table",
    near_zero_fraction: float = NEAR_ZERO_FRACTION,
    path: Path | None = None,
) -> LatencyTable:
    """Validate a DataFrame in dataset format (see :func:`load_table`)."""
    frame = frame.rename(columns=lambda c: str(c).strip())
    if NETWORK not in frame.columns:
        raise DataError(
            f"{source} has no {NETWORK!r} column (columns: {', '.join(map(str, frame.columns))})"
        )
    dup_cols = frame.columns[frame.columns.duplicated()].tolist()
    if dup_cols:
        raise DataError(f"{source} has duplicate column {dup_cols[0]!r}")
    latency_cols = [c for c in frame.columns if c != NETWORK]
    if not latency_cols:
        raise DataError(f"{source} has no latency column besides {NETWORK!r}")
    networks = frame[NETWORK].astype(str).str.strip()
    blank = frame[NETWORK].isna() | networks.str.lower().isin(_NA_TOKENS)
    if blank.any():
        raise DataError(f"{source}: {int(blank.sum())} rows have no network reference")
    if frame.empty:
        raise DataError(f"{source} has no rows")
    duplicated = networks.duplicated(keep="first")
    data = pd.DataFrame({NETWORK: networks[~duplicated].to_numpy()})
    rows = []
    for col in latency_cols:
        check = check_column(frame.loc[~duplicated, col], near_zero_fraction, name=col)
        counts = check.counts
        if counts["text"] and counts["text"] + counts["missing"] == int((~duplicated).sum()):
            example = str(frame.loc[~duplicated, col].iloc[0])
            raise DataError(f"column {col!r} of {source} is not numeric (e.g. {example[:40]!r})")
        data[col] = check.values.to_numpy()
        values = check.values.dropna().to_numpy()
        dropped = sum(counts.values())
        rows.append(
            {
                "column": col,
                "rows": int((~duplicated).sum()),
                "valid": len(values),
                **counts,
                "dropped": dropped,
                "quantised": bool(len(values) and np.all(values == np.round(values))),
            }
        )
        if dropped:
            reasons = ", ".join(f"{k} {v}" for k, v in counts.items() if v)
            message = (
                f"{source} column {col!r}: dropped {dropped} of {len(check.values)} values "
                f"({reasons})"
            )
            # Experiments reload one table per run (hundreds of times): say it once per process.
            log.log(logging.DEBUG if message in _REPORTED else logging.WARNING, message)
            _REPORTED.add(message)
    report = pd.DataFrame(rows).set_index("column")
    report.index.name = None
    return LatencyTable(path, data, report, int(duplicated.sum()))


def load_table(
    path: str | os.PathLike[str], near_zero_fraction: float = NEAR_ZERO_FRACTION
) -> LatencyTable:
    """Load and validate a dataset table (CSV or Parquet, by extension).

    Requires a ``network`` column and at least one latency column. Invalid latencies are
    dropped per column and counted in ``report`` (see the module docstring for the rules).
    Raises :class:`DataError` naming the file or column for unreadable files, a missing
    ``network`` column, rows without a network, and columns with no number at all.
    """
    p = Path(path)
    frame = _read(p)
    table = validate_frame(frame, f"table {p}", near_zero_fraction, path=p)
    table.meta = read_meta(p)
    return table


def meta_path(path: str | os.PathLike[str]) -> Path:
    """The metadata sidecar of a table file: ``FILE.meta.json`` beside it."""
    p = Path(path)
    return p.with_name(p.name + ".meta.json")


def read_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A table's metadata sidecar ({} when there is none)."""
    side = meta_path(path)
    if not side.exists():
        return {}
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read the metadata {side} of table {path}: {exc}") from None
    if not isinstance(meta, dict):
        raise DataError(f"metadata {side} of table {path} is not a JSON object")
    return meta


def save_table(
    frame: pd.DataFrame | LatencyTable,
    path: str | os.PathLike[str],
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write a dataset table atomically (a temporary file in the same folder, then rename).

    The format follows the extension (``.csv``, ``.parquet``). A reader never sees a partial
    file, and an interrupted write leaves any previous file untouched. ``meta`` (default: the
    frame's ``attrs["latlab"]``, or a loaded table's ``meta``) is written to the sidecar
    ``FILE.meta.json``; without any, a sidecar left by an earlier table is removed, so that it
    never describes a table it does not belong to.
    """
    df = frame.data if isinstance(frame, LatencyTable) else frame
    if meta is None:
        meta = frame.meta if isinstance(frame, LatencyTable) else df.attrs.get("latlab")
    p = Path(path)
    fmt = _format(p)
    if NETWORK not in df.columns:
        raise DataError(f"cannot save {p}: the table has no {NETWORK!r} column")
    folder = p.parent if str(p.parent) else Path(".")
    if not folder.is_dir():
        raise DataError(f"cannot save {p}: no folder {folder}")
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        if fmt == "csv":
            df.to_csv(tmp, index=False)
        else:
            df.to_parquet(tmp, index=False)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    side = meta_path(p)
    if meta:
        fd, tmp = tempfile.mkstemp(prefix=f".{side.name}.", suffix=".tmp", dir=folder)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(meta, fh, indent=1, sort_keys=True, default=str)
        os.replace(tmp, side)
    else:
        side.unlink(missing_ok=True)
    return p
