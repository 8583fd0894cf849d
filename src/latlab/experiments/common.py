"""Plumbing shared by the reproduction scripts: result files, resume, aggregation, tables."""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from latlab.fileio import atomic_write_text
from latlab.jsonio import jsonable


def config_hash(config: Any) -> str:
    """A short stable hash of a JSON-able configuration (keys results to their settings)."""
    blob = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


class RunLog:
    """Append-only JSON-lines log of finished runs: a re-run skips what is already there.

    Every record carries a ``key``; :meth:`done` tells whether a key has a record. A line is
    written (and flushed) as each run finishes, so an interrupted experiment loses at most the
    run in progress.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: dict[str, dict[str, Any]] = {}
        if path.exists():
            for line in path.read_text().splitlines():
                line = line.strip()
                if not line:
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:  # a line cut by an interruption: redo that run
                    continue
                self.records[rec["key"]] = rec

    def done(self, key: str) -> bool:
        return key in self.records

    def add(self, record: dict[str, Any]) -> None:
        self.records[record["key"]] = record
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as fh:
            fh.write(json.dumps(jsonable(record), allow_nan=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())


def mean_std(values: Iterable[float | None]) -> dict[str, Any]:
    """Mean and sample standard deviation of the finite values (``n`` of them)."""
    v = np.array([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if not len(v):
        return {"mean": None, "std": None, "n": 0}
    std = float(v.std(ddof=1)) if len(v) > 1 else 0.0
    return {"mean": float(v.mean()), "std": std, "n": len(v)}


def fmt(stat: dict[str, Any], digits: int | str, scale: float = 1.0) -> str:
    """``mean ± std`` for a table cell (``–`` when missing).

    ``digits`` is a number of decimals or a format spec (``".2e"``); values are multiplied by
    ``scale`` first (e.g. 1000 to show milliseconds as microseconds).
    """
    if stat.get("mean") is None:
        return "–"
    spec = f".{digits}f" if isinstance(digits, int) else digits
    if stat.get("n", 0) > 1:
        return f"{stat['mean'] * scale:{spec}} ± {stat['std'] * scale:{spec}}"
    return f"{stat['mean'] * scale:{spec}}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def dump_json(path: Path, doc: Any) -> None:
    atomic_write_text(path, json.dumps(jsonable(doc), indent=1, allow_nan=False) + "\n")
