"""BRP-NAS protocol on the NAS-Bench-201 latency table: every device, five seeds, five predictors.

For every device column of the table (invalid measurements dropped by the table loader, never
trained or tested on) and every seed: 900 random training networks, 100 validation networks
(early stopping only), all remaining networks as the test set. Each predictor -- the FLOPs
proxy, FCNN, LightGBM, random forest, GCN, and the LightGBM-on-one-hot baseline -- is fitted
and scored on the test set: accuracy within ±1/5/10 % of the measurement, MAPE, Spearman ρ,
Kendall τ (mean ± std over seeds). Validation metrics are recorded too: defaults were chosen
on them, never on test numbers.

Also reported per device: the ceiling of BRP-NAS's *pruned* cell graph -- the ±10 % accuracy of
an oracle that predicts, for every pruned graph, the median latency of the archs sharing it.
It shows how much of each device's latency depends on ops the pruning removes.

    latlab experiment run brp-nas --data ../shared/data/nb201_latency.csv [--quick] \\
        [--out DIR] [--threads N]

Runs are appended to ``runs.jsonl`` in the output folder as they finish, so an interrupted
run resumes where it stopped; ``metrics.json`` and ``report.md`` are rewritten at the end.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from latlab.errors import DataError
from latlab.experiments.common import (
    RunLog,
    config_hash,
    dump_json,
    fmt,
    markdown_table,
    mean_std,
)
from latlab.fileio import atomic_write_text

log = logging.getLogger(__name__)

#: Reported predictors: name -> (registry name, parameters). ``gbm-onehot`` is the baseline
#: the best predictor must match in ranking (LightGBM on the 30-feature cell one-hot). The
#: FCNN's dropout 0.3 was chosen on validation data (``benchmarks/tune_brpnas.py``: mean
#: validation MAPE 5.27 % vs 5.40 % with the library default 0.1, 13 devices x 2 seeds).
#: ``layer-sum`` is the layer-wise predictor of the BRP-NAS comparison: the network as a sum of
#: per-op lookup-table times over every op of the cell (dead ones included), the entries fitted
#: on the training networks' latencies (:mod:`latlab.predictors.layersum`) because the table
#: has no per-op measurements.
PREDICTORS: dict[str, tuple[str, dict[str, Any]]] = {
    "flops": ("flops", {}),
    "layer-sum": ("layer-sum", {"layers": "nb201-ops"}),
    "gbm-onehot": ("gbm", {"features": "nb201-onehot"}),
    "fcnn": ("fcnn", {"dropout": 0.3}),
    "gbm": ("gbm", {}),
    "rf": ("rf", {}),
    "gcn": ("gcn", {}),
}
BASELINE = "gbm-onehot"
#: One line per reported predictor for the report.
NOTES = {
    "flops": "linear in MACs and bytes (the FLOPs proxy)",
    "layer-sum": "the layer-wise model of the BRP-NAS comparison -- a per-op lookup table "
    "summed over every op of the cell (dead ones included) plus an extra entry per op on a "
    "live edge, the entries fitted by non-negative least squares on the training latencies "
    "(the table has no per-op measurements)",
    "gbm-onehot": "LightGBM on the 30-feature cell one-hot (the baseline)",
    "fcnn": "the FCNN estimator (dropout 0.3)",
    "gbm": "LightGBM on latlab's features",
    "rf": "random forest on latlab's features",
    "gcn": "the BRP-NAS GCN",
}
#: Metrics in the report, with their table digits.
REPORTED: dict[str, int] = {
    "acc1": 1,
    "acc5": 1,
    "acc10": 1,
    "mape": 2,
    "spearman": 4,
    "kendall": 4,
}
#: ``--quick``: two devices, one seed, a 3000-network test sample, a shorter GCN schedule.
QUICK_DEVICES = ("1080ti_1", "silver_4210r")
QUICK_OVERRIDES: dict[str, dict[str, Any]] = {"gcn": {"max_epochs": 60, "warmup_epochs": 10}}
GPU_PREFIXES = ("1080ti_", "titanx_", "2080ti_", "titan_xp_")  # nb201/FBNet, OFA tables


def predictors_for(space: Any) -> dict[str, tuple[str, dict[str, Any]]]:
    """:data:`PREDICTORS` for the table's search space: nb201 as published; another space's
    ``layer-sum`` tables its IR layers (``auto``) and ``gbm-onehot`` uses its one-hot."""
    if space is None or space.name == "nb201":
        return PREDICTORS
    out = dict(PREDICTORS)
    out["layer-sum"] = ("layer-sum", {})
    if space.onehot:
        out["gbm-onehot"] = ("gbm", {"features": space.onehot})
    return out


#: Notes that differ off nb201 (see :func:`predictors_for`).
OTHER_SPACE_NOTES = {
    "layer-sum": "a lookup table of every distinct layer of latlab's graph, the entries fitted "
    "by non-negative least squares on the training latencies",
    "gbm-onehot": "LightGBM on the space's one-hot of its choices (the baseline)",
}


@dataclass
class BrpnasConfig:
    """Settings of one reproduction (``overrides`` maps a reported name to extra params)."""

    data: str
    out: str = "results/brpnas"
    devices: list[str] | None = None
    seeds: int = 5
    n_train: int = 900
    n_val: int = 100
    max_test: int | None = None
    predictors: list[str] = field(default_factory=lambda: list(PREDICTORS))
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Extra predictors by name: ``{"gcn-b16": ["gcn", {"batch_size": 16}]}`` (for tuning).
    variants: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    threads: int | None = None
    quick: bool = False
    #: Seeds are ``first_seed .. first_seed + seeds - 1``.
    first_seed: int = 0
    #: Fit nothing: aggregate and report the runs already in ``runs.jsonl``.
    report_only: bool = False

    @classmethod
    def quick_config(cls, data: str, out: str, **kw: Any) -> BrpnasConfig:
        kw.setdefault("devices", list(QUICK_DEVICES))
        return cls(data, out, seeds=1, max_test=3000, overrides=QUICK_OVERRIDES, quick=True, **kw)


# --------------------------------------------------------------------------- data


def load_latencies(path: str | Path) -> tuple[pd.DataFrame, dict[str, dict[str, Any]]]:
    """The table (``network`` + device columns, NaN where invalid) and the per-column report."""
    from latlab.datasets.tables import NB201_MIN_MS, load_table

    table = load_table(path, NB201_MIN_MS)  # the shared table's documented floor
    return table.data, table.report_dict()


def split(n: int, seed: int, n_train: int, n_val: int) -> tuple[np.ndarray, ...]:
    """Seeded train / validation / test indices (test = everything else)."""
    if n < n_train + n_val + 1:
        raise DataError(f"{n} valid networks: need more than {n_train} + {n_val} for a test set")
    perm = np.random.default_rng(seed).permutation(n)
    return perm[:n_train], perm[n_train : n_train + n_val], perm[n_train + n_val :]


def pruned_graph_ceiling(networks: Sequence[str], latency: np.ndarray) -> dict[str, float]:
    """±5/10 % accuracy of the best possible predictor on BRP-NAS's pruned cell graph.

    Networks with the same pruned graph get one prediction; the best single prediction for
    ±k % accuracy is close to the group median, which is what this oracle predicts.
    """
    from latlab.encoders.graph import brp_adjacency
    from latlab.encoders.nb201_cell import parse_arch

    keys = []
    for ref in networks:
        adj, feats = brp_adjacency(parse_arch(ref.split(":", 1)[1]))
        keys.append(adj.tobytes() + feats.tobytes())
    frame = pd.DataFrame({"key": keys, "y": latency})
    med = frame.groupby("key")["y"].transform("median").to_numpy()
    rel = np.abs(latency - med) / latency
    return {
        "acc5": float(100 * np.mean(rel <= 0.05)),
        "acc10": float(100 * np.mean(rel <= 0.10)),
        "groups": int(frame["key"].nunique()),
    }


# --------------------------------------------------------------------------- runs


def predictor_params(
    cfg: BrpnasConfig, name: str, seed: int, space: Any = None
) -> tuple[str, dict[str, Any]]:
    """Registry name and full parameters of a reported predictor for one seed (``space``: the
    table's search space, see :func:`predictors_for`)."""
    reg, params = {**predictors_for(space), **cfg.variants}[name]
    p = {**params, **cfg.overrides.get(name, {})}
    if reg not in ("flops", "layer-sum"):  # the deterministic ones take no seed
        p["random_state"] = seed
    if cfg.threads is not None and reg in ("fcnn", "gcn", "gbm", "rf"):
        p.setdefault("n_jobs", cfg.threads)
    return reg, p


def keyed_params(reg: str, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` under the names they had when the recorded runs were keyed: fcnn's and gcn's
    ``n_jobs`` was ``num_threads`` (``renamed_params``), so the committed ``runs.jsonl`` keys
    (a hash of the setting) still match and a re-run resumes instead of refitting."""
    from latlab.predictors import PREDICTORS

    old = {new: was for was, new in PREDICTORS[reg].renamed_params.items()}
    return {old.get(k, k): v for k, v in params.items()}


def _one_run(
    reg: str,
    params: dict[str, Any],
    graphs: list[Any],
    y: np.ndarray,
    idx: tuple[np.ndarray, ...],
) -> dict[str, Any]:
    from latlab.predictors import make_predictor
    from latlab.training.metrics import regression_metrics

    tr, va, te = idx
    model = make_predictor(reg, **params)
    t0 = time.perf_counter()
    model.fit([graphs[i] for i in tr], y[tr], eval_set=([graphs[i] for i in va], y[va]))
    fit_s = time.perf_counter() - t0
    val = regression_metrics(y[va], model.predict([graphs[i] for i in va]))
    t0 = time.perf_counter()
    pred = model.predict([graphs[i] for i in te])
    predict_s = time.perf_counter() - t0
    train_log = getattr(model, "train_log_", {}) or {}
    return {
        "test": regression_metrics(y[te], pred),
        "val": val,
        "fit_s": fit_s,
        "predict_s": predict_s,
        "train_log": {k: v for k, v in train_log.items() if k not in ("val_loss", "train_loss")},
        "pred": pred,
    }


Progress = Callable[[str, int, int], None]
PREDICTIONS_DIR = "predictions"


def _predictions_file(out: Path, device: str, name: str) -> Path:
    return out / PREDICTIONS_DIR / f"{device}__{name}.npz"


def save_predictions(out: Path, device: str, name: str, y: np.ndarray, pred: np.ndarray) -> None:
    """Keep one seed's test predictions (float32, beside ``runs.jsonl``) for the plots."""
    from latlab.fileio import atomic_write_with

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:  # a file object: savez would append .npz to a name
            np.savez_compressed(fh, y=y.astype(np.float32), pred=np.asarray(pred, np.float32))

    atomic_write_with(_predictions_file(out, device, name), write)


def load_predictions(out: Path, device: str, name: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The kept test predictions of ``name`` on ``device`` (None for runs that kept none)."""
    path = _predictions_file(out, device, name)
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as z:
        return z["y"].astype(float), z["pred"].astype(float)


def run(
    cfg: BrpnasConfig,
    progress: Progress | None = None,
    loaded: tuple[pd.DataFrame, dict[str, dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """Run (or resume) the reproduction; returns the ``metrics.json`` document.

    ``loaded`` is ``load_latencies(cfg.data)`` when the caller already read the table."""
    from latlab.datasets.references import resolve
    from latlab.datasets.spaces import space_of

    known = {**PREDICTORS, **cfg.variants}
    unknown = [p for p in cfg.predictors if p not in known]
    if unknown:
        raise DataError(f"unknown predictor {unknown[0]!r} (known: {', '.join(known)})")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    table, drop_report = loaded if loaded is not None else load_latencies(cfg.data)
    devices = cfg.devices or [c for c in table.columns if c != "network"]
    missing = [d for d in devices if d not in table.columns]
    if missing:
        raise DataError(f"no device column {missing[0]!r} in {cfg.data}")
    runs = RunLog(out / "runs.jsonl")
    graph_of: dict[str, Any] = {}
    total = len(devices) * cfg.seeds * len(cfg.predictors)
    done = 0
    wanted: list[str] = []
    ceilings: dict[str, Any] = {}
    space_name = "nb201"
    for device in devices:
        rows = table[["network", device]].dropna()
        refs = rows["network"].tolist()
        y = rows[device].to_numpy(dtype=float)
        for ref in refs:
            if ref not in graph_of:
                graph_of[ref] = resolve(ref)
        graphs = [graph_of[r] for r in refs]
        space = space_of(graphs)
        space_name = space.name if space is not None else "other"
        if space_name == "nb201":
            ceilings[device] = pruned_graph_ceiling(refs, y)
        for seed in range(cfg.first_seed, cfg.first_seed + cfg.seeds):
            tr, va, te = split(len(y), seed, cfg.n_train, cfg.n_val)
            if cfg.max_test is not None and len(te) > cfg.max_test:
                te = np.sort(np.random.default_rng(1000 + seed).choice(te, cfg.max_test, False))
            for name in cfg.predictors:
                reg, params = predictor_params(cfg, name, seed, space)
                setting = {
                    "device": device,
                    "predictor": name,
                    "registry": reg,
                    "params": keyed_params(reg, params),
                    "seed": seed,
                    "n_train": cfg.n_train,
                    "n_val": cfg.n_val,
                    "max_test": cfg.max_test,
                    "n_valid": len(y),
                }
                key = f"{device}|{name}|{seed}|{config_hash(setting)}"
                wanted.append(key)
                done += 1
                if not runs.done(key) and not cfg.report_only:
                    log.info("%s %s seed %d: fitting", device, name, seed)
                    result = _one_run(reg, params, graphs, y, (tr, va, te))
                    pred = result.pop("pred")
                    if seed == cfg.first_seed:  # one seed's test predictions, for the plots
                        save_predictions(out, device, name, y[te], pred)
                    runs.add({"key": key, **setting, **result})
                    log.info(
                        "%s %s seed %d: acc10 %.2f %% MAPE %.2f %% rho %.4f (fit %.1f s)",
                        device,
                        name,
                        seed,
                        result["test"]["acc10"],
                        result["test"]["mape"],
                        result["test"]["spearman"],
                        result["fit_s"],
                    )
                if progress is not None:
                    progress(f"{device} {name} seed {seed}", done, total)
    records = [runs.records[k] for k in wanted if runs.done(k)]
    doc = aggregate(cfg, records, devices, ceilings, drop_report)
    if space_name != "nb201":
        doc["space"] = space_name
    dump_json(out / "metrics.json", doc)
    atomic_write_text(out / "report.md", report(doc))
    return doc


# --------------------------------------------------------------------------- report


def aggregate(
    cfg: BrpnasConfig,
    records: list[dict[str, Any]],
    devices: list[str],
    ceilings: dict[str, Any],
    drop_report: dict[str, Any],
) -> dict[str, Any]:
    """Mean ± std over seeds per device × predictor, and the target checks."""
    import torch

    results: dict[str, dict[str, Any]] = {}
    for d in devices:
        results[d] = {}
        for p in cfg.predictors:
            recs = [r for r in records if r["device"] == d and r["predictor"] == p]
            if not recs:
                continue
            entry: dict[str, Any] = {"seeds": len(recs)}
            for split_name in ("test", "val"):
                entry[split_name] = {
                    m: mean_std(r[split_name][m] for r in recs)
                    for m in (*REPORTED, "mae", "rmspe", "n")
                }
            entry["fit_s"] = mean_std(r["fit_s"] for r in recs)
            entry["predict_s"] = mean_std(r["predict_s"] for r in recs)
            results[d][p] = entry
    return {
        "experiment": "brpnas",
        "config": asdict(cfg),
        "environment": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "torch_threads": torch.get_num_threads(),
        },
        "dropped": {d: drop_report.get(d, {}) for d in devices},
        "pruned_graph_ceiling": ceilings,
        "results": results,
        "targets": check_targets(results),
    }


def _mean(results: dict[str, Any], d: str, p: str, metric: str) -> float | None:
    try:
        return results[d][p]["test"][metric]["mean"]
    except KeyError:
        return None


def check_targets(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The issue's targets, evaluated on mean test figures (reported either way)."""
    out: dict[str, Any] = {}
    for d, preds in results.items():
        ours = {p: v for p, v in preds.items() if p != BASELINE}
        if not ours:
            continue
        acc = {p: _mean(results, d, p, "acc10") or 0.0 for p in ours}
        rho = {p: _mean(results, d, p, "spearman") or -1.0 for p in ours}
        best_acc = max(acc, key=lambda p: acc[p])
        best_rho = max(rho, key=lambda p: rho[p])
        base = _mean(results, d, BASELINE, "spearman")
        entry: dict[str, Any] = {
            "best_acc10": {"predictor": best_acc, "value": acc[best_acc]},
            "best_spearman": {"predictor": best_rho, "value": rho[best_rho]},
            "baseline_spearman": base,
            "beats_baseline_spearman": None if base is None else rho[best_rho] >= base - 0.002,
        }
        if d.startswith(GPU_PREFIXES) or d == "silver_4210r":
            entry["best_acc10_ge_97"] = acc[best_acc] >= 97.0
        if d.startswith(GPU_PREFIXES) and "gcn" in acc:
            entry["gcn_acc10"] = acc["gcn"]
            entry["gcn_acc10_ge_96"] = acc["gcn"] >= 96.0
        out[d] = entry
    return out


def report(doc: dict[str, Any]) -> str:
    """``report.md``: one table per metric (devices x predictors, mean ± std over seeds)."""
    cfg = doc["config"]
    results = doc["results"]
    devices = list(results)
    preds = [p for p in cfg["predictors"] if any(p in results[d] for d in devices)]
    seeds = cfg["seeds"]
    lines = [
        "# BRP-NAS protocol on the NAS-Bench-201 latency table"
        if doc.get("space", "nb201") == "nb201"
        else f"# BRP-NAS protocol on the {doc['space']} latency table",
        "",
        f"{cfg['n_train']} training / {cfg['n_val']} validation networks, the rest as test"
        + (f" (a random {cfg['max_test']} of them)" if cfg["max_test"] else "")
        + f"; {seeds} seed(s); mean ± std over seeds of the test metrics."
        + (" **Quick run.**" if cfg["quick"] else "")
        + (
            " **Report from the finished runs only**: a cell marked *n=k seeds* averages the "
            "k seeds that finished."
            if cfg.get("report_only")
            else ""
        ),
        f"Environment: {doc['environment']['platform']}, "
        f"torch threads {doc['environment']['torch_threads']}.",
        "",
    ]
    other = OTHER_SPACE_NOTES if doc.get("space", "nb201") != "nb201" else {}
    notes = [f"`{p}`: {other.get(p, NOTES[p])}" for p in preds if p in NOTES]
    if notes:
        lines += ["Predictors: " + "; ".join(notes) + ".", ""]
    titles = {
        "acc1": "±1 % accuracy (%)",
        "acc5": "±5 % accuracy (%)",
        "acc10": "±10 % accuracy (%)",
        "mape": "MAPE (%)",
        "spearman": "Spearman ρ",
        "kendall": "Kendall τ",
    }

    def cell(d: str, p: str, metric: str, digits: int) -> str:
        if p not in results[d]:
            return "–"
        text = fmt(results[d][p]["test"][metric], digits)
        k = results[d][p]["seeds"]
        return text if k >= seeds else f"{text} (n={k} seeds)"

    for metric, digits in REPORTED.items():
        rows = [[d, *(cell(d, p, metric, digits) for p in preds)] for d in devices]
        lines += [f"## {titles[metric]}", "", markdown_table(["device", *preds], rows), ""]
    rows = [
        [d, *(fmt(results[d][p]["fit_s"], 1) if p in results[d] else "–" for p in preds)]
        for d in devices
    ]
    lines += ["## Fit time (s)", "", markdown_table(["device", *preds], rows), ""]
    ceil = doc["pruned_graph_ceiling"]
    rows = [
        [
            d,
            str(ceil[d]["groups"]) if d in ceil else "-",
            f"{ceil[d]['acc5']:.1f}" if d in ceil else "-",
            f"{ceil[d]['acc10']:.1f}" if d in ceil else "-",
            str(doc["dropped"].get(d, {}).get("dropped", 0)),
        ]
        for d in devices
    ]
    lines += [
        "## BRP-NAS pruned-graph ceiling and dropped measurements",
        "",
        "Best possible ±5/±10 % accuracy of any predictor that sees only BRP-NAS's pruned cell "
        "graph (the median latency of the archs sharing a pruned graph; nb201 only), and the "
        "invalid measurements the table loader dropped."
        if ceil
        else "## Dropped measurements",
        "",
        markdown_table(
            ["device", "pruned graphs", "acc5 ceiling", "acc10 ceiling", "dropped"], rows
        ),
        "",
    ]
    rows = []
    for d, t in doc["targets"].items():
        rows.append(
            [
                d,
                f"{t['best_acc10']['predictor']} {t['best_acc10']['value']:.2f}",
                {True: "yes", False: "**no**"}.get(t.get("best_acc10_ge_97"), "n/a"),
                f"{t['gcn_acc10']:.2f}" if "gcn_acc10" in t else "n/a",
                {True: "yes", False: "**no**"}.get(t.get("gcn_acc10_ge_96"), "n/a"),
                f"{t['best_spearman']['predictor']} {t['best_spearman']['value']:.4f}",
                "–" if t["baseline_spearman"] is None else f"{t['baseline_spearman']:.4f}",
                {True: "yes", False: "**no**"}.get(t["beats_baseline_spearman"], "n/a"),
            ]
        )
    lines += [
        "## Targets",
        "",
        "Best ±10 % accuracy ≥ 97 % on the GPU columns and silver_4210r; GCN ≥ 96 % on the GPU "
        "columns; best Spearman ρ ≥ the LightGBM-on-one-hot baseline's − 0.002 everywhere.",
        "",
        markdown_table(
            [
                "device",
                "best acc10",
                "≥ 97",
                "gcn acc10",
                "≥ 96",
                "best ρ",
                "baseline ρ",
                "beats",
            ],
            rows,
        ),
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- latlab experiment

#: Minimum test networks per device; smaller tables get proportional split sizes.
MIN_TEST = 100


def sized_for(cfg: BrpnasConfig, n_valid: int) -> BrpnasConfig:
    """``cfg`` with 60 % / 10 % train / validation when the table is too small for 900 + 100.

    A table measured on the spot (CI measures ~150 nb201 networks) cannot hold BRP-NAS's
    900 + 100 + test split; proportional sizes keep the protocol's shape on it.
    """
    if n_valid >= cfg.n_train + cfg.n_val + MIN_TEST:
        return cfg
    n_train, n_val = int(0.6 * n_valid), max(int(0.1 * n_valid), 2)
    if n_train < 10:
        raise DataError(f"{n_valid} valid networks: the BRP-NAS protocol needs at least 20")
    log.warning(
        "%d valid networks: using %d training / %d validation networks (60 / 10 %%)",
        n_valid,
        n_train,
        n_val,
    )
    cfg.n_train, cfg.n_val = n_train, n_val
    return cfg


def config_for(
    ctx: Any, report_only: bool = False
) -> tuple[BrpnasConfig, tuple[pd.DataFrame, dict[str, dict[str, Any]]]]:
    """The protocol's settings for a ``latlab experiment run brp-nas`` context, and the loaded
    table (passed on to :func:`run`, so that it is read and validated once)."""
    assert ctx.data is not None  # the runner checks --data first
    loaded = load_latencies(ctx.data)
    table = loaded[0]
    columns = [c for c in table.columns if c != "network"]
    if not columns:
        raise DataError(f"{ctx.data} has no device column")
    if ctx.quick:
        # another table (OFA's): its first and last columns (batch 1 and the largest batch)
        devices = [d for d in QUICK_DEVICES if d in columns] or list(
            dict.fromkeys(columns[:: max(len(columns) - 1, 1)])
        )
        cfg = BrpnasConfig.quick_config(str(ctx.data), str(ctx.out), devices=devices)
    else:
        cfg = BrpnasConfig(str(ctx.data), str(ctx.out), devices=columns)
    cfg.threads = ctx.threads
    cfg.first_seed = ctx.seed
    cfg.report_only = report_only
    n_valid = int(min(table[d].notna().sum() for d in cfg.devices or columns))
    return sized_for(cfg, n_valid), loaded


def plot(doc: dict[str, Any], out: Path) -> list[str]:
    """The report's figures: ±10 % accuracy per device × predictor, predicted vs measured."""
    from latlab.experiments import plots

    results = doc["results"]
    devices = [d for d in results if results[d]]
    preds = [p for p in doc["config"]["predictors"] if any(p in results[d] for d in devices)]
    files = []
    if devices:
        series = {p: [_mean(results, d, p, "acc10") for d in devices] for p in preds}
        errors = {
            p: [results[d][p]["test"]["acc10"]["std"] if p in results[d] else None for d in devices]
            for p in preds
        }
        fig = plots.grouped_bars(
            devices,
            series,
            errors,
            ylabel="test networks within ±10 % (%)",
            title="±10 % accuracy, mean ± std over seeds",
            ylim=(0, 100),
        )
        plots.save(fig, out / "acc10.png")
        files.append("acc10.png")
    for d in devices:
        panels = {}
        for p in preds:
            kept = load_predictions(out, d, p)
            if kept is not None:
                panels[p] = kept
        if panels:
            fig = plots.scatter_grid(
                panels, title=f"{d}: predicted vs measured, seed {doc['config']['first_seed']}"
            )
            plots.save(fig, out / "predicted_vs_measured.png")
            files.append("predicted_vs_measured.png")
            doc["scatter_device"] = d
            break
    return files


def experiment(ctx: Any) -> dict[str, Any]:
    """``latlab experiment run brp-nas``: run or resume the protocol, then plot and report.

    ``ctx.out`` holds ``runs.jsonl`` (one line per finished fit, keyed by the run's settings),
    so re-running resumes and a folder made by ``latlab experiment run brp-nas`` with
    the same settings is reused as it is. ``ctx.report_only`` (``--report-only``) fits
    nothing and reports the finished runs, marking cells with fewer seeds than asked.
    """
    cfg, loaded = config_for(ctx, bool(getattr(ctx, "report_only", False)))
    if ctx.threads:
        import torch

        torch.set_num_threads(ctx.threads)
    doc = run(cfg, ctx.progress, loaded)
    figures = plot(doc, Path(cfg.out))
    text = report(doc)
    lines = ["", "## Figures", ""]
    if "acc10.png" in figures:
        lines += ["![±10 % accuracy per device and predictor](acc10.png)", ""]
    if "predicted_vs_measured.png" in figures:
        lines += [
            f"![predicted vs measured on {doc['scatter_device']}](predicted_vs_measured.png)",
            "",
        ]
    else:
        lines += [
            "No predicted-vs-measured plot: these runs were made before the runner kept test "
            "predictions (`predictions/`).",
            "",
        ]
    lines += ["## How to repeat", "", f"`{ctx.command}`", ""]
    atomic_write_text(Path(cfg.out) / "report.md", text + "\n".join(lines))
    doc["figures"] = figures
    doc["summary"] = summary(doc)
    return doc


def summary(doc: dict[str, Any]) -> dict[str, Any]:
    """Headline figures: per device, the best ±10 % accuracy and the best Spearman ρ."""
    return {
        f"{d}: best acc10 %, best ρ": (
            f"{t['best_acc10']['value']:.1f} ({t['best_acc10']['predictor']}), "
            f"{t['best_spearman']['value']:.4f} ({t['best_spearman']['predictor']})"
        )
        for d, t in doc["targets"].items()
    }


# --------------------------------------------------------------------------- command line
