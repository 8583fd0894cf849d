"""The measurement protocol and the real onnxruntime/torch backends on tiny FCNNs."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from latlab.datasets.measure import (
    MeasureConfig,
    default_device_name,
    get_backend,
    machine_fingerprint,
    measure,
)
from latlab.datasets.measure.fingerprint import cpu_short_name, fingerprint_digest
from latlab.datasets.measure.protocol import robust_cv
from latlab.errors import MeasurementError

FAST = {"repeats": 30, "min_repeats": 5, "time_budget_s": 0.5, "max_warmup_s": 0.5}


def _check_measurement(m, cfg: MeasureConfig) -> None:
    assert m.median_ms > 0
    assert m.p10_ms <= m.median_ms <= m.p90_ms
    assert len(m.samples_ms) == m.repeats
    assert cfg.min_repeats <= m.repeats <= cfg.repeats
    assert all(s > 0 for s in m.samples_ms)
    assert m.median_ms == pytest.approx(float(np.median(m.samples_ms)))
    assert m.cv == pytest.approx(np.std(m.samples_ms, ddof=1) / np.mean(m.samples_ms))
    assert m.robust_cv == pytest.approx(robust_cv(m.samples_ms))
    assert m.warmup_runs >= cfg.min_warmup
    assert len(m.attempt_cvs) == m.remeasures + 1 <= cfg.max_remeasures + 1
    for key in (
        "backend",
        "threads",
        "batch",
        "min_warmup",
        "settle_tol",
        "repeats",
        "time_budget_s",
        "cv_threshold",
        "max_remeasures",
        "timer",
    ):
        assert key in m.protocol
    assert m.protocol["threads"] == cfg.threads
    assert m.protocol_key == cfg.protocol_key()
    assert m.finished_at >= m.started_at
    assert {"cpu_model", "physical_cores", "isa", "memory_bytes", "os", "libraries"} <= set(
        m.fingerprint
    )


def test_onnxruntime_measures_tiny_fcnn():
    cfg = MeasureConfig(**FAST)
    m = measure("fcnn:16-32-8", cfg)
    _check_measurement(m, cfg)
    assert m.network == "fcnn:16-32-8"
    assert m.backend_info["backend"] == "onnxruntime"
    assert m.backend_info["providers"] == ["CPUExecutionProvider"]
    assert m.backend_info["intra_op_threads"] == 1
    assert m.backend_info["allow_spinning"] is False
    assert m.backend_info["version"]


def test_torch_measures_tiny_fcnn():
    cfg = MeasureConfig(backend="torch", **FAST)
    m = measure("fcnn:16-32-8", cfg)
    _check_measurement(m, cfg)
    assert m.backend_info["backend"] == "torch"
    assert m.backend_info["converter"] == "latlab.encoders.torch_export"


def test_bigger_network_is_slower_on_both_backends():
    # 2 x 1024 x 1024 MACs against 16 x 32: a gap of four orders of magnitude in work that no
    # amount of machine noise hides.
    for backend in ("onnxruntime", "torch"):
        cfg = MeasureConfig(backend=backend, **FAST)
        small = measure("fcnn:4-4", cfg)
        big = measure("fcnn:1024-1024-1024", cfg)
        assert big.median_ms > 3 * small.median_ms, backend


def test_onnxruntime_threads_and_session_options_honoured():
    be = get_backend("onnxruntime")
    so = be.session_options(3)
    assert so.intra_op_num_threads == 3
    assert so.inter_op_num_threads == 1
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert so.get_session_config_entry("session.inter_op.allow_spinning") == "0"
    m = measure("fcnn:8-8", MeasureConfig(threads=2, **FAST), be)
    assert m.backend_info["intra_op_threads"] == 2
    assert m.protocol["threads"] == 2


def test_torch_threads_honoured():
    import torch

    before = torch.get_num_threads()
    try:
        m = measure("fcnn:8-8", MeasureConfig(backend="torch", threads=2, **FAST))
        assert m.backend_info["threads"] == 2
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_batch_changes_work_and_protocol_key():
    a = MeasureConfig(batch=1)
    b = MeasureConfig(batch=8)
    assert a.protocol_key() != b.protocol_key()
    assert a.protocol_key() == MeasureConfig(batch=1).protocol_key()
    m = measure("fcnn:8-8", MeasureConfig(batch=8, **FAST))
    assert m.protocol["batch"] == 8


class SleepBackend:
    """A backend whose runs busy-wait for given durations (an external thing under test)."""

    name = "sleep"

    def __init__(self, durations_ms: Callable[[int], float]) -> None:
        self.durations_ms = durations_ms
        self.calls = 0

    def info(self) -> dict[str, Any]:
        return {"backend": self.name, "version": "0"}

    def prepare(self, network, batch, threads):
        def run() -> None:
            end = time.perf_counter() + self.durations_ms(self.calls) / 1e3
            self.calls += 1
            while time.perf_counter() < end:
                pass

        return run


def test_high_cv_triggers_remeasure_and_keeps_lowest():
    # Alternating 1 / 3 ms: robust CV = 1.4826 * 1 / 2 = 0.74, far above 0.1. Runs of a few ms
    # keep preemption on a loaded CI machine from blurring the two levels (at 0.2 / 0.6 ms one
    # attempt in three came out at 0.17 there).
    be = SleepBackend(lambda i: 1.0 if i % 2 else 3.0)
    cfg = MeasureConfig(
        backend="sleep", repeats=20, min_repeats=20, max_remeasures=2, min_warmup=2, max_warmup=4
    )
    m = measure("fcnn:2-2", cfg, be)
    assert m.remeasures == 2
    assert len(m.attempt_cvs) == 3
    assert min(m.attempt_cvs) == pytest.approx(m.robust_cv)
    # the best of three attempts is kept; what must hold is that it stays above the threshold
    assert m.robust_cv > 2 * cfg.cv_threshold
    assert not m.stable


def test_steady_runs_are_not_remeasured():
    be = SleepBackend(lambda i: 0.3)
    cfg = MeasureConfig(backend="sleep", repeats=30, min_repeats=30, cv_threshold=0.2)
    m = measure("fcnn:2-2", cfg, be)
    assert m.remeasures == 0
    assert m.stable
    assert 0.29 <= m.median_ms < 0.6


def test_warmup_runs_until_times_settle():
    # The first runs are slow and speed up geometrically: warm-up must outlast the decay.
    be = SleepBackend(lambda i: 0.2 * (1 + 8 * 0.7**i))
    cfg = MeasureConfig(
        backend="sleep", min_warmup=2, warmup_window=3, settle_tol=0.05, repeats=20, min_repeats=20
    )
    m = measure("fcnn:2-2", cfg, be)
    assert m.warmup_settled
    assert m.warmup_runs >= 11  # 8 * 0.7**i stays above ~5 % of the tail until i ~ 10
    assert m.median_ms < 0.2 * 1.6


def test_time_budget_stops_repeats_early():
    be = SleepBackend(lambda i: 2.0)
    cfg = MeasureConfig(
        backend="sleep", repeats=1000, min_repeats=5, time_budget_s=0.03, min_warmup=1, max_warmup=2
    )
    m = measure("fcnn:2-2", cfg, be)
    assert 5 <= m.repeats < 100


def test_robust_cv_golden_values():
    assert robust_cv([1.0, 1.0, 1.0, 1.0, 100.0]) == 0.0
    assert robust_cv([1.0, 2.0, 3.0]) == pytest.approx(1.4826 * 1.0 / 2.0)


def test_invalid_config_and_unknown_backend_are_one_line_errors():
    with pytest.raises(MeasurementError, match="threads=0"):
        MeasureConfig(threads=0)
    with pytest.raises(MeasurementError, match="min_repeats"):
        MeasureConfig(repeats=5, min_repeats=10)
    with pytest.raises(MeasurementError, match="unknown measurement backend 'nope'"):
        get_backend("nope")


def test_backend_failure_names_the_network():
    class Broken(SleepBackend):
        def prepare(self, network, batch, threads):
            raise RuntimeError("kernel exploded\nsecond line")

    with pytest.raises(MeasurementError, match=r"could not prepare 'fcnn:3-3': kernel exploded$"):
        measure("fcnn:3-3", MeasureConfig(backend="sleep"), Broken(lambda i: 0))


def test_input_shape_refused_by_backend_without_it():
    with pytest.raises(MeasurementError, match="does not take an input shape"):
        measure("fcnn:3-3", MeasureConfig(input_shape=(1, 3)), SleepBackend(lambda i: 0))


@pytest.mark.parametrize("name", ["onnxruntime-cuda", "torch-cuda"])
def test_cuda_backends_fail_clearly_without_gpu(name):
    import onnxruntime
    import torch

    if torch.cuda.is_available() and "CUDAExecutionProvider" in (
        onnxruntime.get_available_providers()
    ):
        pytest.skip("a CUDA GPU is present")
    if name == "torch-cuda" and torch.cuda.is_available():
        pytest.skip("torch sees a CUDA GPU")
    if name == "onnxruntime-cuda" and "CUDAExecutionProvider" in (
        onnxruntime.get_available_providers()
    ):
        pytest.skip("onnxruntime has CUDA")
    with pytest.raises(MeasurementError) as info:
        get_backend(name)
    message = str(info.value)
    assert "\n" not in message
    assert name in message and "CUDA" in message


def test_fingerprint_and_device_names():
    fp = machine_fingerprint()
    assert fp["physical_cores"] >= 1 and fp["memory_bytes"] > 0
    assert set(fp["isa"]) <= set(
        __import__("latlab.datasets.measure.fingerprint", fromlist=["ISA_FLAGS"]).ISA_FLAGS
    )
    assert fingerprint_digest(fp) == fingerprint_digest(machine_fingerprint())
    name = default_device_name("onnxruntime")
    assert name == default_device_name("onnxruntime")  # deterministic
    assert name.endswith(f"-{fp['physical_cores']}c-ort")
    assert default_device_name("torch", 4).endswith("-torch-4t")
    fake = {"cpu_model": "AMD EPYC 7763 64-Core Processor", "physical_cores": 64}
    assert default_device_name("onnxruntime", fingerprint=fake) == "epyc-7763-64c-ort"
    gpu = {"gpus": ["NVIDIA H100 80GB HBM3"], "cpu_model": "x", "physical_cores": 16}
    assert default_device_name("torch-cuda", fingerprint=gpu) == "h100-80gb-hbm3-torch-cuda"
    assert cpu_short_name("Intel(R) Xeon(R) Platinum 8480+ @ 2.00GHz") == "xeon-platinum-8480"
    assert cpu_short_name("Intel(R) Xeon(R) Processor") == "xeon"
