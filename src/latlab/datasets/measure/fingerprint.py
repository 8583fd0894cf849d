"""The machine fingerprint recorded with every measurement, and readable device names.

A latency is only meaningful together with the machine and software that produced it: the same
network runs at different speeds with another CPU model, core count, ISA extension (AVX-512,
AMX), memory size or onnxruntime/torch version. The fingerprint collects what can be read
cheaply and without privileges (``/proc/cpuinfo``, ``/sys``, psutil, package metadata) so that a
dataset row can always be traced to its machine. Library versions are read from package
metadata, never by importing torch or onnxruntime.
"""

from __future__ import annotations

import functools
import hashlib
import json
import platform
import re
import shutil
import socket
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

#: ISA extensions that change kernel selection in onnxruntime/torch (the ones worth recording).
ISA_FLAGS = (
    "sse4_1",
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "avx_vnni",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "popcnt",
    "neon",
    "asimd",
    "sve",
)

#: Packages whose versions are recorded (those that change measured latencies).
LIBRARIES = ("numpy", "onnx", "onnxruntime", "onnxruntime-gpu", "torch")

#: Short names of the measurement backends, used in default device names.
BACKEND_ABBREV = {
    "onnxruntime": "ort",
    "onnxruntime-cuda": "ort-cuda",
    "torch": "torch",
    "torch-cuda": "torch-cuda",
}


def _cpuinfo() -> dict[str, str]:
    """The first processor block of /proc/cpuinfo (empty where it does not exist)."""
    info: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return info
    for line in text.splitlines():
        if not line.strip():
            if info:
                break
            continue
        key, _, value = line.partition(":")
        info.setdefault(key.strip(), value.strip())
    return info


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError:
        return None


def _library_versions() -> dict[str, str]:
    versions: dict[str, str] = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _gpus() -> list[str]:
    """GPU names from nvidia-smi where it exists (no CUDA library is imported)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


@functools.lru_cache(maxsize=1)
def _fingerprint() -> str:
    cpu = _cpuinfo()
    flags = set((cpu.get("flags") or cpu.get("Features") or "").split())
    model = cpu.get("model name") or cpu.get("Hardware") or platform.processor() or "unknown"
    freq: dict[str, float] = {}
    try:
        f = psutil.cpu_freq()
    except (OSError, RuntimeError, NotImplementedError):  # pragma: no cover - platform quirk
        f = None
    if f is not None:
        freq = {"current_mhz": round(f.current, 1)}
        if f.max:  # 0 where the maximum is not exposed (virtual machines)
            freq["max_mhz"] = round(f.max, 1)
    elif "cpu MHz" in cpu:
        freq = {"current_mhz": float(cpu["cpu MHz"])}
    fp: dict[str, Any] = {
        "cpu_model": model,
        "cpu_vendor": cpu.get("vendor_id", ""),
        "cpu_family": cpu.get("cpu family", ""),
        "cpu_model_id": cpu.get("model", ""),
        "physical_cores": psutil.cpu_count(logical=False) or psutil.cpu_count() or 1,
        "logical_cores": psutil.cpu_count() or 1,
        "frequency": freq,
        "governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "isa": sorted(flags.intersection(ISA_FLAGS)),
        "hypervisor": "hypervisor" in flags,
        "memory_bytes": psutil.virtual_memory().total,
        "gpus": _gpus(),
        "machine": platform.machine(),
        "os": platform.platform(),
        "hostname": socket.gethostname(),
        "python": platform.python_version(),
        "libraries": _library_versions(),
    }
    return json.dumps(fp, sort_keys=True)


def machine_fingerprint() -> dict[str, Any]:
    """What this machine is: CPU, cores, frequency, ISA flags, memory, OS, library versions.

    Computed once per process (a fresh copy is returned each time, so callers may modify it).
    """
    return json.loads(_fingerprint())


def fingerprint_digest(fp: dict[str, Any] | None = None) -> str:
    """A short hash of the hardware part of a fingerprint (two runs on one machine agree)."""
    fp = fp if fp is not None else machine_fingerprint()
    stable = {k: fp.get(k) for k in ("cpu_model", "physical_cores", "isa", "memory_bytes")}
    return hashlib.sha1(json.dumps(stable, sort_keys=True).encode()).hexdigest()[:12]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


_NOISE_WORDS = {
    "intel",
    "r",
    "tm",
    "cpu",
    "processor",
    "amd",
    "core",
    "with",
    "radeon",
    "graphics",
    "gen",
    "th",
    "nvidia",
    "geforce",
    "genuine",
}


def cpu_short_name(model: str) -> str:
    """A short readable name of a CPU model string.

    ``"Intel(R) Xeon(R) Platinum 8480+"`` -> ``"xeon-platinum-8480"``,
    ``"AMD EPYC 7763 64-Core Processor"`` -> ``"epyc-7763"``, ``"Intel(R) Xeon(R) Processor"``
    -> ``"xeon"``. Frequencies (``@ 2.10GHz``) and trademark noise are dropped.
    """
    model = model.split("@")[0]
    words = [w for w in _slug(model).split("-") if w and w not in _NOISE_WORDS]
    words = [w for w in words if not re.fullmatch(r"\d+", w) or len(w) >= 3]
    return "-".join(words[:3]) or "cpu"


def default_device_name(
    backend: str,
    threads: int = 1,
    fingerprint: dict[str, Any] | None = None,
    accelerator: str | None = None,
    *,
    batch: int = 1,
    mode: str = "sequential",
    inter_op_threads: int = 1,
    precision: str = "fp32",
) -> str:
    """A readable, deterministic id of a device configuration, e.g. ``xeon-2c-ort``.

    Used as the latency column name when none is given. Settings that change the latency are
    appended when they differ from the defaults (one thread, batch 1, sequential execution),
    so that names of default configurations never change: threads as ``-4t``, batch as
    ``-b8``, parallel execution as ``-par`` with its inter-op threads (``-par2``), a precision
    other than fp32 last (``-int8``, ``-bf16``); e.g. ``xeon-2c-ort-4t-b8-par2-int8``. A GPU
    backend names the accelerator (``h100-ort-cuda``) instead of the CPU.
    """
    fp = fingerprint if fingerprint is not None else machine_fingerprint()
    if accelerator is None and backend.endswith("-cuda") and fp.get("gpus"):
        accelerator = str(fp["gpus"][0])
    abbrev = BACKEND_ABBREV.get(backend, _slug(backend))
    if accelerator:
        name = f"{cpu_short_name(accelerator)}-{abbrev}"
    else:
        name = f"{cpu_short_name(str(fp.get('cpu_model', 'cpu')))}-{fp.get('physical_cores', 1)}c"
        name += f"-{abbrev}"
    if threads != 1:
        name += f"-{threads}t"
    if batch != 1:
        name += f"-b{batch}"
    if mode != "sequential":
        name += f"-{mode[:3]}{inter_op_threads}"
    elif inter_op_threads != 1:
        name += f"-i{inter_op_threads}"
    return with_precision(name, precision)


def with_precision(device: str, precision: str) -> str:
    """``device`` named at ``precision``: the precision suffix :func:`default_device_name`
    appends (``xeon-2c-ort`` -> ``xeon-2c-ort-int8``; fp32 adds nothing)."""
    from latlab.encoders.quantize import check_precision

    check_precision(precision)
    return device if precision == "fp32" else f"{device}-{precision}"


def split_precision(device: str) -> tuple[str, str]:
    """(the FP32 sibling's name, the precision) of a device name: the inverse of
    :func:`with_precision` (``xeon-2c-ort-bf16`` -> ``("xeon-2c-ort", "bf16")``; a name with
    no precision suffix is fp32). The one parser of device-name precision suffixes."""
    from latlab.encoders.quantize import PRECISIONS

    for precision in PRECISIONS:
        suffix = f"-{precision}"
        if precision != "fp32" and device.endswith(suffix) and len(device) > len(suffix):
            return device[: -len(suffix)], precision
    return device, "fp32"
