"""The report of the ``annette`` experiment (:mod:`latlab.experiments.annette`): the
comparison table, the headline note and ``report.md``."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import pandas as pd

from latlab.experiments.annette_settings import MODELS
from latlab.fileio import atomic_write_text

log = logging.getLogger("latlab.experiments.annette")

#: The campaign record of a report folder (sessions measured into the same store).
CAMPAIGN_FILE = "campaign.json"


# --------------------------------------------------------------------------- report


def _fmt(x: Any, digits: int = 2) -> str:
    if isinstance(x, float):
        return "nan" if math.isnan(x) else f"{x:.{digits}f}"
    return str(x)


def _md_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def comparison_rows(metrics: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """The headline table: one row per predictor, MAPE/rho/acc10 per network set."""
    comp = metrics["comparison"]
    parts = list(comp["sets"])
    short = {
        "generated": "gen",
        "nb201": "nb201",
        "zoo": "zoo",
        "zoo-cnn": "zoo-cnn",
        "attention": "attn",
    }
    header = ["predictor", "kind"]
    for part in parts:
        n = comp["sets"][part]["networks"]
        header += [
            f"{short[part]} MAPE % (n={n})",
            f"{short[part]} rho",
            f"{short[part]} ±10 %",
        ]
    rows = []
    for name, row in comp["models"].items():
        cells: list[Any] = [name, row["kind"]]
        for part in parts:
            m = row.get(part) or {}
            cells += [m.get("mape"), m.get("spearman"), m.get("acc10")]
        rows.append(cells)
    return header, rows


def headline_note(metrics: dict[str, Any]) -> str:
    """What the headline table's sets are and what each predictor was trained on."""
    comp = metrics["comparison"]
    tn = comp.get("training_networks", {})
    learned = (
        f"Learned predictors trained on {tn.get('cnn_train', 0)} generated cnn and "
        f"{tn.get('nb201_train', 0)} nb201 networks measured here (validation "
        f"{tn.get('cnn_val', 0) + tn.get('nb201_val', 0)}); "
        if tn
        else "No learned predictors in this run; "
    )
    return (
        "Network latency end to end (onnxruntime, 1 thread). Layer-wise models "
        "(roofline ... lut) trained on kernel benchmarks only; `kernel` (kernel-level: "
        "onnxruntime's optimised graph, per-kernel models) on the kernel benchmarks and the "
        "generated in-context `block:` networks of the bench store. "
        + learned
        + "none of the test networks below was seen in training. `gen` = held-out generated "
        "cnn networks, `nb201` = random nb201 networks, `zoo` = the zoo's real networks "
        "(out of distribution for the learned predictors: no hand-designed architecture is "
        "in their training spaces), split into `zoo-cnn` and `attn` (attention models). "
        "MAPE in %, Spearman's rho, and the fraction of networks "
        "predicted within ±10 %."
    )


def _transformer_layer_section(m: dict[str, Any]) -> list[str]:
    """Report lines: the layer models on the attention models' profiled transformer kernels."""
    t = m.get("transformer_layer_level") or {}
    if not t.get("layers"):
        return []
    return [
        "## Layer level, transformers: kernels of the zoo's attention models, profiled",
        "",
        f"{t['layers']} runtime groups of the attention models whose layer type is a "
        "transformer kernel (MatMul by a weight, MatMul of two activations, LayerNorm, "
        "residual Add + LayerNorm, RMSNorm, GELU, Softmax, embedding); the runtime's "
        "grouping, models trained on smart-padded benchmarks.",
        "",
        _md_table(
            ["model", "MAE (ms)", "RMSPE (%)", "MAPE (%)"],
            [[k, v["mae"], v["rmspe"], v["mape"]] for k, v in t["models"].items()],
        ),
        "",
        "MAPE (%) per layer type:",
        "",
        _md_table(
            ["type", "n", *MODELS],
            [[key, v["n"], *(v[n] for n in MODELS)] for key, v in t["by_key"].items()],
        ),
        "",
    ]


def _attention_network_section(m: dict[str, Any]) -> list[str]:
    """Report lines: Table 5 on the attention models alone."""
    a = m.get("network_level_attention") or {}
    if not a.get("networks"):
        return []
    return [
        f"Attention models alone ({a['networks']} networks):",
        "",
        _md_table(
            ["model", "MAE (ms)", "MAPE (%)", "Spearman rho", "within 10 %"],
            [[k, v["mae"], v["mape"], v["spearman"], v["acc10"]] for k, v in a["models"].items()],
        ),
        "",
    ]


def write_report(out: Path, metrics: dict[str, Any], networks: pd.DataFrame) -> None:
    m = metrics
    parts = [
        "# ANNETTE on this machine: layer-wise models vs measured networks",
        "",
        f"Command: `{m['command']}`  ",
        f"Device `{m['device']}`, onnxruntime {m['onnxruntime']}, 1 thread, timer "
        f"`{m['settings']['timer']}`; {m['settings']['kernels']} kernel benchmarks, "
        f"{m['settings']['multilayer']} multi-layer benchmarks; models trained on benchmarks "
        "only (no zoo or nb201 network).  ",
        f"Run time {m['seconds']:.0f} s wall, {m['run']['cpu_s']:.0f} s CPU"
        f"{sessions_note(m)}; load average "
        f"{m['run']['load_avg_start']:.1f} at the start, {m['run']['load_avg_end']:.1f} at the "
        f"end on {m['run']['cpus']} CPUs; {m['run']['networks_measured_now']} of "
        f"{m['run']['networks']} networks measured in this invocation (the rest read back "
        "from the store).",
        "",
        "## Headline comparison: every predictor on held-out networks",
        "",
        headline_note(m),
        "",
        _md_table(*comparison_rows(m)),
        "",
        "![zoo](zoo_predicted_vs_measured.png)",
        "",
        "![networks](networks_predicted_vs_measured.png)",
        "",
        "## Layer level (ANNETTE Table 3): convolution layers of the zoo, profiled",
        "",
        f"{m['layer_level']['layers']} convolution groups (conv + fused BN/activation/add) "
        "of the zoo networks; measured = onnxruntime profiler; models trained on smart-padded "
        "benchmarks.",
        "",
        _md_table(
            ["model", "MAE (ms)", "RMSPE (%)", "MAPE (%)", "MAPE >= 0.1 ms (%)"],
            [
                [
                    k,
                    v["mae"],
                    v["rmspe"],
                    v["mape"],
                    m["layer_level"]["models_over_0.1ms"][k]["mape"],
                ]
                for k, v in m["layer_level"]["models"].items()
            ],
        ),
        "",
        f"(last column: the {m['layer_level']['layers_over_0.1ms']} groups of at least 0.1 ms; "
        "below, the profiler's own per-node cost -- a few microseconds -- dominates the "
        "measured time.)",
        "",
        *_transformer_layer_section(m),
        "## Network level (ANNETTE Table 5): zoo networks end to end",
        "",
        _md_table(
            ["model", "MAE (ms)", "MAPE (%)", "Spearman rho", "within 10 %"],
            [
                [k, v["mae"], v["mape"], v["spearman"], v["acc10"]]
                for k, v in m["network_level"]["models"].items()
            ],
        ),
        "",
        *_attention_network_section(m),
        "Per network (prediction error in %):",
        "",
        _md_table(
            ["network", "measured (ms)", *MODELS],
            [
                [
                    r["network"],
                    r["measured_ms"],
                    *(100 * (r[n] - r["measured_ms"]) / r["measured_ms"] for n in MODELS),
                ]
                for _, r in networks.iterrows()
            ],
        ),
        "",
        "## Fidelity (ANNETTE Table 6): nb201 networks",
        "",
    ]
    fid = m.get("fidelity")
    if fid:
        parts += [
            f"{fid['networks']} random nb201 networks measured end to end.",
            "",
            _md_table(
                ["model", "Spearman rho", "Kendall tau", "MAPE (%)"],
                [[k, v["spearman"], v["kendall"], v["mape"]] for k, v in fid["models"].items()],
            ),
            "",
        ]
    else:
        parts += ["(no nb201 networks)", ""]
    pad = m["smart_padding"]
    parts += [
        "## Smart padding",
        "",
        "Layer time of each single-layer benchmark against the profiler's kernel time:",
        "",
        _md_table(
            ["benchmarks", "n", "single MAPE", "padded MAPE", "single median", "padded median"],
            [
                [
                    k,
                    v["n"],
                    v["single_mape"],
                    v["padded_mape"],
                    v["single_median_ape"],
                    v["padded_median_ape"],
                ]
                for k, v in pad["layer_error"].items()
            ],
        ),
        "",
        "Zoo network MAPE (%) of each model trained on each kind of layer time:",
        "",
        _md_table(
            ["model", *pad["network_mape"].keys()],
            [
                [name, *(pad["network_mape"][meth][name] for meth in pad["network_mape"])]
                for name in MODELS
            ],
        ),
        "",
        "## Mapping model (fusion)",
        "",
        _md_table(
            ["pairs", "networks", "n", "fused", "F1", "MCC", "accuracy"],
            [
                [k, v["networks"], v["n"], v["fused"], v["f1"], v["mcc"], v["accuracy"]]
                for k, v in m["mapping"].items()
            ],
        ),
        "",
    ]
    atomic_write_text(out / "report.md", "\n".join(parts) + "\n")


def sessions_note(m: dict[str, Any]) -> str:
    """How many sessions of the campaign a report's figures span (empty for one)."""
    n = int(m["run"].get("sessions", 1) or 1)
    return f" over {n} sessions of this campaign (see {CAMPAIGN_FILE})" if n > 1 else ""
