"""``transfer-spaces``: few-shot transfer across search spaces (MultiPredict's setting).

    latlab experiment run transfer-spaces --data ../shared/data/ofa_latency.csv [--quick]

``--data`` is any one of the three space tables; the other two (``nb201_latency.csv``,
``fbnet_latency.csv``, ``ofa_latency.csv``) must sit beside it. For every direction
*source space → target space* and every target device column, k = 10 random networks of the
target space measured on that device adapt the transfer predictor pretrained on the *source*
space's table (``latlab train --predictor transfer --pretrain SOURCE_TABLE`` on the k rows).
The target networks are in no pretrain table, so their source-device latencies come from one
model per source device trained on the source space's networks; across spaces that model is
``linear`` on the IR ``summary`` (MACs, bytes, depth, per-kind layer counts and MACs), the
representation every space's networks share (the spaces' one-hot and op-count encodings do
not carry over; see :mod:`latlab.predictors.transfer`). The architecture head then fits the
target space's own one-hot + summary on the k networks. Baselines: the FLOPs proxy fitted on
the same k networks, and (for reference, ``in-space``) the ordinary transfer pretrained on the
target space's own table without the target column (leave-one-device-out). Spearman ρ and
MAPE on held-out networks of the target device, per device and kind, mean ± std over seeds.

Device pairs. nb201 and FBNet share 13 device names (GPU batch 256 vs 64 aside); OFA has 6
GPU configurations (2080ti, titan_xp at batch 1/32/64) that neither has. Directions:

* nb201 → ofa, fbnet → ofa and ofa → nb201, ofa → fbnet: every source column is a source
  (no target device exists in the source table: a new device *and* a new space);
* nb201 → fbnet, fbnet → nb201 (full run only): the same-named column of the source table is
  excluded (``target_exclude``), so the target is a new device there too, not the same
  device measured on another space.

The report names, per target device, the source device the stage-1 ensemble weighted most
(what the target was found to resemble).

Settings: full -- all six directions, every target column, 5 seeds, 1000 test networks;
``--quick`` -- the four ofa directions, 3 target columns each, 2 seeds, 300 test networks.
Resumable: one line per finished run in ``runs.jsonl``.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from latlab.errors import DataError
from latlab.experiments.common import RunLog, config_hash, markdown_table, mean_std
from latlab.experiments.context import ExperimentContext
from latlab.experiments.transfer import device_kind
from latlab.fileio import atomic_write_text

log = logging.getLogger(__name__)

SPACES: tuple[str, ...] = ("nb201", "fbnet", "ofa")
#: ``transfer`` across spaces, the FLOPs proxy on the k networks, and (for reference) the
#: in-space transfer: pretrained on the target space's own table without the target column.
MODELS: tuple[str, ...] = ("transfer", "flops", "in-space")
K = 10
#: (source, target, exclude the target's same-named source column)
DIRECTIONS_FULL: tuple[tuple[str, str, bool], ...] = (
    ("nb201", "ofa", False),
    ("fbnet", "ofa", False),
    ("ofa", "nb201", False),
    ("ofa", "fbnet", False),
    ("nb201", "fbnet", True),
    ("fbnet", "nb201", True),
)
DIRECTIONS_QUICK = DIRECTIONS_FULL[:4]
QUICK_DEVICES: dict[str, tuple[str, ...]] = {
    "ofa": ("2080ti_1", "2080ti_64", "titan_xp_32"),
    "nb201": ("1080ti_1", "silver_4114", "pixel3"),
    "fbnet": ("1080ti_64", "gold_6240", "samsung_a50"),
}


@dataclass(frozen=True)
class Settings:
    directions: tuple[tuple[str, str, bool], ...]
    seeds: int
    test_size: int
    quick: bool


def tables(data: Path) -> dict[str, Path]:
    """The three space tables beside ``data``; a one-line error naming the missing one."""
    folder = data.resolve().parent
    out = {s: folder / f"{s}_latency.csv" for s in SPACES}
    for space, path in out.items():
        if not path.is_file():
            raise DataError(
                f"transfer-spaces needs {path.name} beside {data} (the {space} table; "
                f"--data names one of {', '.join(p.name for p in out.values())})"
            )
    return out


def _run_one(
    target: Any, pretrain: Path, device: str, model: str, seed: int, test_size: int,
    exclude: list[str],
) -> dict[str, Any]:  # fmt: skip
    """Fit ``model`` on K random target networks of ``device``; score on ``test_size`` others."""
    from scipy.stats import spearmanr

    from latlab.predictors import make_predictor
    from latlab.training.data import training_data

    td = training_data(target, device)
    refs, y = list(td.networks), np.asarray(td.latency_ms, dtype=np.float64)
    perm = np.random.default_rng(seed).permutation(len(refs))
    tr, te = perm[:K], perm[K : K + test_size]
    t0 = time.monotonic()
    params: dict[str, Any] = {}
    name = model
    if model in ("transfer", "in-space"):
        from latlab.datasets.tables import NB201_MIN_MS

        name = "transfer"
        params = {"pretrain": str(pretrain), "random_state": seed, "min_ms": NB201_MIN_MS}
        if exclude:
            params["target_exclude"] = exclude
    predictor = make_predictor(name, **params).fit([refs[i] for i in tr], y[tr])
    pred = np.asarray(predictor.predict([refs[i] for i in te]), dtype=np.float64)
    out: dict[str, Any] = {
        "spearman": float(spearmanr(pred, y[te])[0]),
        "mape": float(100 * np.mean(np.abs(pred - y[te]) / y[te])),
        "n_test": len(te),
        "seconds": time.monotonic() - t0,
    }
    if name == "transfer":
        weights = predictor.source_weights()  # type: ignore[attr-defined]
        out["top_source"] = max(weights, key=lambda n: weights[n])
        out["source_predictor"] = predictor.source_predictor_  # type: ignore[attr-defined]
    return out


def experiment(ctx: ExperimentContext) -> dict[str, Any]:
    """Run (or resume) the cross-space protocol into ``ctx.out``."""
    from latlab.datasets.tables import NB201_MIN_MS
    from latlab.training.data import load_source

    if ctx.data is None:
        raise DataError("transfer-spaces needs one of the space tables (--data)")
    paths = tables(ctx.data)  # before any work
    start = time.monotonic()
    s = Settings(
        DIRECTIONS_QUICK if ctx.quick else DIRECTIONS_FULL,
        2 if ctx.quick else 5,
        300 if ctx.quick else 1000,
        ctx.quick,
    )
    sources = {sp: load_source(paths[sp], NB201_MIN_MS) for sp in SPACES}
    from latlab.predictors import make_predictor

    setting = {
        "tables": {sp: str(p) for sp, p in paths.items()},
        "k": K,
        "test_size": s.test_size,
        "params": {m: make_predictor(m).get_params() for m in ("transfer", "flops")},
    }
    tag = config_hash(setting)
    runs = RunLog(ctx.out / "runs.jsonl")
    plan = [
        (src, tgt, excl, dev)
        for src, tgt, excl in s.directions
        for dev in (QUICK_DEVICES[tgt] if ctx.quick else sources[tgt].devices)
    ]
    total, done = len(plan) * s.seeds * len(MODELS), 0
    for src, tgt, excl, dev in plan:
        exclude = [dev] if excl and dev in sources[src].devices else []
        for seed in range(ctx.seed, ctx.seed + s.seeds):
            for model in MODELS:
                key = f"{tag}|{src}>{tgt}|{dev}|{seed}|{model}"
                if not runs.done(key):
                    pretrain, excl_cols = paths[src], exclude
                    if model == "in-space":  # leave-one-device-out on the target's own table
                        pretrain, excl_cols = paths[tgt], [dev]
                    rec = _run_one(sources[tgt], pretrain, dev, model, seed, s.test_size,
                                   excl_cols)  # fmt: skip
                    runs.add({"key": key, "source": src, "target": tgt, "device": dev,
                              "seed": seed, "model": model, "exclude": exclude, **rec})  # fmt: skip
                    log.info("%s>%s %s seed %d %s: rho %.4f", src, tgt, dev, seed, model,
                             rec["spearman"])  # fmt: skip
                done += 1
                ctx.progress("transfer-spaces runs", done, total)
    records = [r for r in runs.records.values() if r["key"].startswith(tag + "|")]
    metrics = summarise(records, plan)
    metrics["settings"] = {
        "directions": [list(d) for d in s.directions],
        "k": K,
        "seeds": s.seeds,
        "test_size": s.test_size,
        "quick": s.quick,
        "source_columns": {sp: list(sources[sp].devices) for sp in SPACES},
    }
    metrics["seconds"] = time.monotonic() - start
    metrics["run_seconds"] = float(sum(r.get("seconds", 0.0) for r in records))
    metrics["load_average"] = list(_loadavg())
    atomic_write_text(ctx.out / "report.md", report(metrics, ctx))
    return metrics


def _loadavg() -> tuple[float, float, float]:
    import os

    try:
        return os.getloadavg()
    except OSError:
        return (math.nan, math.nan, math.nan)


def summarise(records: list[dict[str, Any]], plan: list[tuple[str, str, bool, str]]) -> dict:
    """Per direction, device and model: ρ and MAPE over seeds; means per direction and kind."""
    by: dict[tuple[str, str, str, str], list[dict[str, Any]]] = {}
    for r in records:
        by.setdefault((f"{r['source']}>{r['target']}", r["device"], r["model"], ""), []).append(r)
    directions: dict[str, Any] = {}
    for src, tgt, _, dev in plan:
        d = directions.setdefault(f"{src}>{tgt}", {"devices": {}, "kinds": {}})
        entry: dict[str, Any] = {"kind": device_kind(dev)}
        for model in MODELS:
            rs = by.get((f"{src}>{tgt}", dev, model, ""), [])
            entry[model] = {
                "spearman": mean_std(r["spearman"] for r in rs),
                "mape": mean_std(r["mape"] for r in rs),
            }
            if model == "transfer" and rs:  # the cross-space run's nearest source
                entry["top_source"] = Counter(r["top_source"] for r in rs).most_common(1)[0][0]
        d["devices"][dev] = entry
    for d in directions.values():
        for model in MODELS:
            rhos = [e[model]["spearman"]["mean"] for e in d["devices"].values()]
            rhos = [x for x in rhos if x is not None and math.isfinite(x)]
            d[f"mean_{model}"] = float(np.mean(rhos)) if rhos else None
        groups: dict[str, list[float]] = {}
        for e in d["devices"].values():
            rho = e["transfer"]["spearman"]["mean"]
            if rho is not None and math.isfinite(rho):
                groups.setdefault(e["kind"], []).append(rho)
        d["kinds"] = {k: float(np.mean(v)) for k, v in sorted(groups.items())}
    return {"directions": directions}


def _cell(st: dict[str, Any], digits: int = 3) -> str:
    if st["mean"] is None:
        return "–"
    if st["n"] > 1:
        return f"{st['mean']:.{digits}f} ± {st['std']:.{digits}f}"
    return f"{st['mean']:.{digits}f}"


def report(m: dict[str, Any], ctx: ExperimentContext) -> str:
    s = m["settings"]
    la = m["load_average"]
    lines = [
        "# Few-shot transfer across search spaces (k = 10)",
        "",
        f"Command: `{ctx.command or 'latlab experiment run transfer-spaces'}`  ",
        f"{'quick' if s['quick'] else 'full'} run: {len(s['directions'])} directions, "
        f"{s['seeds']} seed(s), {s['test_size']} test networks per run; "
        f"{m['run_seconds']:.0f} s of fitting and scoring over all runs ({m['seconds']:.0f} s "
        f"in the invocation that wrote this report); load average at the end "
        f"{la[0]:.1f} / {la[1]:.1f} / {la[2]:.1f} (1/5/15 min) on the shared 2-core machine.",
        "",
        "Protocol: for each direction *source → target* and each target device, k = 10 random "
        "networks of the target space measured on the device adapt `transfer` pretrained on "
        "the source space's table (its source devices are modelled on the target networks by "
        "`linear` on the IR summary, the representation both spaces share; the head fits the "
        "target space's one-hot + summary); `flops` is fitted on the same k networks; `in-space` "
        "is the ordinary transfer pretrained on the target space's own table without the "
        "target's column (leave-one-device-out, for reference). Test: "
        "held-out networks of the target device. Source devices: every column of the source "
        "table, except in nb201 ↔ fbnet, where the target's same-named column is excluded.",
        "",
        "## Mean Spearman ρ per direction",
        "",
    ]
    rows = []
    for name, d in m["directions"].items():
        kinds = ", ".join(f"{k} {v:.3f}" for k, v in d["kinds"].items())
        rows.append(
            [
                name.replace(">", " → "),
                str(len(d["devices"])),
                "–" if d["mean_transfer"] is None else f"{d['mean_transfer']:.3f}",
                "–" if d["mean_flops"] is None else f"{d['mean_flops']:.3f}",
                "–" if d["mean_in-space"] is None else f"{d['mean_in-space']:.3f}",
                kinds,
            ]
        )
    lines += [
        markdown_table(
            [
                "direction",
                "devices",
                "transfer ρ",
                "flops ρ (k=10)",
                "in-space transfer ρ",
                "transfer ρ per kind",
            ],
            rows,
        ),
        "",
        "## Per target device",
        "",
    ]
    rows = []
    for name, d in m["directions"].items():
        for dev, e in d["devices"].items():
            rows.append(
                [
                    name.replace(">", " → "),
                    dev,
                    e["kind"],
                    _cell(e["transfer"]["spearman"]),
                    _cell(e["transfer"]["mape"], 1),
                    _cell(e["flops"]["spearman"]),
                    _cell(e["flops"]["mape"], 1),
                    _cell(e["in-space"]["spearman"]),
                    str(e.get("top_source", "–")),
                ]
            )
    lines += [
        markdown_table(
            [
                "direction",
                "device",
                "kind",
                "transfer ρ",
                "transfer MAPE %",
                "flops ρ",
                "flops MAPE %",
                "in-space ρ",
                "top source",
            ],
            rows,
        ),
        "",
        "Top source: the source device (or analytical proxy) the stage-1 ensemble weighted "
        "most, most often over seeds.",
        "",
    ]
    return "\n".join(lines)
