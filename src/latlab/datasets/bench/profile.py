"""onnxruntime's profiler, per-node kernel times traced to IR layers (:mod:`.trace`).

:func:`profile_network` runs a network with the profiler on, under the measurement protocol's
session options, and returns a :class:`Profile`: every optimised node's duration in every run,
the runtime groups (mapped layers) and their times. The profiler reports wall-clock durations;
with the ``thread`` timer (a machine shared with other jobs) a node's time is the 10th
percentile of its durations instead of the median, because preemption only ever adds time.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from latlab.datasets.bench.kernels_runtime import RuntimeKernel, kernels_from_profile
from latlab.datasets.bench.trace import (
    RuntimeGroup,
    RuntimeMapping,
    RuntimeNode,
    _optimised_model,
    _trace,
    optimising_options,
)
from latlab.encoders.ir import NetworkGraph
from latlab.errors import MeasurementError, first_line

if TYPE_CHECKING:
    import pandas as pd


# --------------------------------------------------------------------------- profiling


@dataclass
class Profile:
    """Per-node kernel times of ``runs`` inferences of a network, traced to its IR layers."""

    network: str
    mapping: RuntimeMapping
    node_samples_us: dict[int, list[float]]
    run_us: list[float]
    settings: dict[str, Any] = field(default_factory=dict)
    #: Per profiled run: the calling thread's CPU time over the wall time of ``session.run``
    #: (recorded to judge how disturbed the runs were; 1.0 on an idle machine).
    cpu_ratio: list[float] = field(default_factory=list)
    #: Per-node statistic of the durations: ``median`` (``wall`` timer) or ``p10`` (``thread``
    #: timer: on a shared machine preemption only ever adds time to a kernel, so the 10th
    #: percentile over the runs is its least disturbed duration; on an idle machine it is
    #: within a few per cent of the median).
    statistic: str = "median"
    #: The executed nodes with their cost features (:mod:`.kernels_runtime`), by node index.
    kernels: list[RuntimeKernel] = field(default_factory=list)

    def node_us(self, index: int) -> float:
        """A node's duration by :attr:`statistic` (NaN when the profiler never reported it)."""
        s = self.node_samples_us.get(index)
        if not s:
            return float("nan")
        return float(np.percentile(s, 10) if self.statistic == "p10" else np.median(s))

    def group_samples_us(self, group: RuntimeGroup) -> np.ndarray:
        """Per-run sums of the group's node times (runs where every node was reported)."""
        series = [self.node_samples_us.get(i, []) for i in group.nodes]
        n = min((len(s) for s in series), default=0)
        if n == 0:
            return np.zeros(0)
        return np.sum([np.asarray(s[:n]) for s in series], axis=0)

    def group_ms(self, group: RuntimeGroup) -> float:
        """The group's time: the sum of its nodes' durations by :attr:`statistic`, in ms."""
        if not group.nodes or any(not self.node_samples_us.get(i) for i in group.nodes):
            return float("nan")
        return sum(self.node_us(i) for i in group.nodes) / 1e3

    def layers_ms(self, layers: Sequence[int]) -> float:
        """Time of the runtime groups executing ``layers`` (ms; NaN if none ran them)."""
        groups = {self.mapping.layer_group[i] for i in layers if i in self.mapping.layer_group}
        if not groups:
            return float("nan")
        return sum(self.group_ms(self.mapping.groups[g]) for g in groups)

    @property
    def inserted_ms(self) -> float:
        """Time of the runtime-inserted nodes (layout reorders) by :attr:`statistic`, ms."""
        nodes = [
            n.index for n in self.mapping.nodes if n.inserted and self.node_samples_us.get(n.index)
        ]
        if not nodes:
            return 0.0
        return self.group_ms(RuntimeGroup((), tuple(nodes), True))

    @property
    def kernels_ms(self) -> float:
        """Sum of every reported node's time by :attr:`statistic`, ms."""
        nodes = tuple(n.index for n in self.mapping.nodes if self.node_samples_us.get(n.index))
        return self.group_ms(RuntimeGroup((), nodes, True))

    @property
    def run_ms(self) -> float:
        """Median of onnxruntime's own ``model_run`` durations (with profiling on), ms."""
        return float(np.median(self.run_us)) / 1e3 if self.run_us else float("nan")

    def node_table(self) -> pd.DataFrame:
        """One row per runtime node: names, op, IR layers, inserted/exact, median/p10/p90 us."""
        import pandas as pd

        g = self.mapping.graph
        rows = []
        kernels = {k.index: k for k in self.kernels}
        for n in self.mapping.nodes:
            s = np.asarray(self.node_samples_us.get(n.index, []), dtype=float)
            kern = kernels.get(n.index)
            rows.append(
                {
                    "node_index": n.index,
                    "node": n.name,
                    "op": n.op,
                    "domain": n.domain,
                    "layers": [g.layers[i].name for i in n.layers],
                    "inserted": n.inserted,
                    "exact": n.exact,
                    "runs": len(s),
                    "median_us": float(np.median(s)) if len(s) else float("nan"),
                    "p10_us": float(np.percentile(s, 10)) if len(s) else float("nan"),
                    "p90_us": float(np.percentile(s, 90)) if len(s) else float("nan"),
                    "samples_us": s.tolist(),
                    "kernel": None if kern is None else kern.as_dict(),
                }
            )
        return pd.DataFrame(rows)

    def group_table(self) -> pd.DataFrame:
        """One row per runtime group (mapped layer): its IR layers, kinds and median time."""
        import pandas as pd

        g = self.mapping.graph
        rows = []
        for gi, grp in enumerate(self.mapping.groups):
            rows.append(
                {
                    "group": gi,
                    "layer_indices": list(grp.layers),
                    "layers": [g.layers[i].name for i in grp.layers],
                    "kinds": [g.layers[i].kind for i in grp.layers],
                    "nodes": [self.mapping.nodes[i].name for i in grp.nodes],
                    "node_indices": list(grp.nodes),
                    "exact": grp.exact,
                    "time_ms": self.group_ms(grp),
                }
            )
        return pd.DataFrame(rows)


def _parse_profile(
    events: list[dict[str, Any]], nodes: list[RuntimeNode], skip: int
) -> tuple[dict[int, list[float]], list[float]]:
    by_key: dict[tuple[str, str], list[int]] = defaultdict(list)
    for n in nodes:
        by_key[(n.name, n.op)].append(n.index)
    seen: dict[tuple[str, str], int] = defaultdict(int)
    samples: dict[int, list[float]] = defaultdict(list)
    runs: list[float] = []
    for e in events:
        cat = e.get("cat")
        if cat == "Session" and e.get("name") == "model_run":
            runs.append(float(e.get("dur", 0)))
            continue
        if cat != "Node" or not str(e.get("name", "")).endswith("_kernel_time"):
            continue
        name = str(e["name"])[: -len("_kernel_time")]
        op = str(e.get("args", {}).get("op_name", ""))
        key = (name, op)
        if key not in by_key and re.fullmatch(rf"{re.escape(op)}_\d+", name):
            key = ("", op)  # unnamed nodes are reported as OpType_<internal index>
        idx = by_key.get(key)
        if not idx:
            continue
        k = seen[key]
        seen[key] += 1
        run_no = k // len(idx)
        if run_no < skip:
            continue
        samples[idx[k % len(idx)]].append(float(e.get("dur", 0)))
    return dict(samples), runs[skip:]


def profile_network(
    network: str | NetworkGraph,
    *,
    threads: int = 1,
    runs: int = 30,
    warmup: int = 5,
    time_budget_s: float = 2.0,
    seed: int = 0,
    timer: str = "wall",
    precision: str = "fp32",
) -> Profile:
    """Run ``network`` with onnxruntime's profiler on; per-node times traced to IR layers.

    Session options are the measurement protocol's (one intra-op thread by default, spinning
    off, all graph optimisations) so the profiled graph is the measured one. ``warmup`` runs
    are discarded; then up to ``runs`` runs or ``time_budget_s`` seconds (at least 3 runs).
    The profiler's durations are wall-clock; with ``timer="thread"`` (the protocol's choice
    for a shared machine) a node's time is the 10th percentile of its durations rather than the
    median (:attr:`Profile.statistic`); every raw duration is kept in ``node_samples_us``.
    ``precision="int8"`` profiles the network's quantised QDQ model (its executed kernels are
    the quantised ones, :mod:`.kernels_quant`; they trace to IR layers only loosely).
    """
    if timer not in ("wall", "thread") or (timer == "thread" and threads != 1):
        raise MeasurementError(f"profiler timer {timer!r} needs 'wall', or 'thread' with 1 thread")
    import onnxruntime as ort

    from latlab.datasets.measure.inputs import fixed_inputs
    from latlab.datasets.references import onnx_model, resolve

    graph = resolve(network)
    ref = graph.reference
    try:
        model = onnx_model(network, precision=precision)
        data = model.SerializeToString()
        feeds = fixed_inputs(network, model, 1, None, seed=seed)
        with tempfile.TemporaryDirectory(prefix="latlab-prof-") as tmp:
            folder = Path(tmp)
            ext_model = _optimised_model(data, threads, "ORT_ENABLE_EXTENDED", folder)
            so, _ = optimising_options(
                threads, "ORT_ENABLE_ALL", folder, "optimised-run", profile=True
            )
            session = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
            import onnx

            all_model = onnx.load(so.optimized_model_filepath, load_external_data=False)
            outputs = [o.name for o in session.get_outputs()]
            import time

            for _ in range(warmup):
                session.run(outputs, feeds)
            start = time.perf_counter()
            done = 0
            ratio: list[float] = []
            while done < runs and (done < 3 or time.perf_counter() - start < time_budget_s):
                w0, c0 = time.perf_counter_ns(), time.thread_time_ns()
                session.run(outputs, feeds)
                c1, w1 = time.thread_time_ns(), time.perf_counter_ns()
                ratio.append((c1 - c0) / max(w1 - w0, 1))
                done += 1
            prof_path = session.end_profiling()
            events = json.loads(Path(prof_path).read_text())
            os.remove(prof_path)
    except MeasurementError:
        raise
    except Exception as exc:
        first = first_line(exc)
        raise MeasurementError(f"profiling {ref!r} failed: {first}") from exc
    mapping = _trace(graph, ext_model, all_model)
    samples, run_us = _parse_profile(events, mapping.nodes, warmup)
    settings = {
        "threads": threads,
        "runs": done,
        "warmup": warmup,
        "time_budget_s": time_budget_s,
        "onnxruntime": ort.__version__,
        "graph_optimization": "all",
        "timer": timer,
    }
    if precision != "fp32":  # fp32 profiles keep the settings keys they always had
        settings["precision"] = precision
    stat = "p10" if timer == "thread" else "median"
    kernels = kernels_from_profile(all_model, events)
    return Profile(ref, mapping, samples, run_us, settings, ratio, stat, kernels)
