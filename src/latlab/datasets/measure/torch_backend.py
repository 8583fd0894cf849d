"""torch eager backends: ``torch`` (CPU) and ``torch-cuda``.

The network's IR is turned into an eager ``torch.nn.Module`` by
:func:`latlab.encoders.torch_export.to_torch` (``nn.Conv2d``, ``nn.Linear``, ... as a PyTorch
user writes them; see that module for why not onnx2torch) and called under
``torch.inference_mode()`` on fixed seeded inputs, the same values the onnxruntime backend
feeds. ``torch.set_num_threads(threads)`` sets the intra-op thread count; it is process-wide
and stays set after the measurement.

``torch-cuda`` moves module and inputs to the GPU and calls ``torch.cuda.synchronize()`` after
each run, because CUDA kernels are launched asynchronously: without it the timer would stop
before the GPU has finished. It fails with one line where torch has no CUDA device.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from latlab.datasets.measure.inputs import graph_inputs
from latlab.datasets.measure.onnxruntime_backend import Runner
from latlab.encoders.ir import NetworkGraph
from latlab.errors import MeasurementError


def cpu_bf16_flags() -> list[str]:
    """The CPU's native bfloat16 instruction sets (``avx512_bf16``, ``amx_bf16``) per
    /proc/cpuinfo; empty where it has none (bf16 is then emulated) or cannot be read."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            flags = next((ln.split(":", 1)[1].split() for ln in fh if ln.startswith("flags")), [])
    except OSError:
        return []
    return sorted(f for f in flags if f in ("avx512_bf16", "amx_bf16"))


class TorchBackend:
    """Runs the network as an eager torch module built from its IR."""

    def __init__(self, cuda: bool = False, device_id: int = 0) -> None:
        import torch

        self._torch = torch
        self.cuda = cuda
        self.device_id = device_id
        self.name = "torch-cuda" if cuda else "torch"
        if cuda and not torch.cuda.is_available():
            raise MeasurementError(
                f"backend 'torch-cuda' needs a CUDA GPU, but torch {torch.__version__} sees none "
                "(torch.cuda.is_available() is False)"
            )

    def info(self) -> dict[str, Any]:
        torch = self._torch
        out: dict[str, Any] = {
            "backend": self.name,
            "library": "torch",
            "version": torch.__version__,
            "converter": "latlab.encoders.torch_export",
            "device": f"cuda:{self.device_id}" if self.cuda else "cpu",
            "providers": ["cuda" if self.cuda else "cpu"],
        }
        if self.cuda:
            out["gpu"] = torch.cuda.get_device_name(self.device_id)
            out["cuda_version"] = torch.version.cuda
        return out

    def prepare(
        self,
        network: str | NetworkGraph,
        batch: int,
        threads: int,
        input_shape: Sequence[int] | None = None,
        precision: str = "fp32",
    ) -> Runner:
        from latlab.datasets.references import resolve
        from latlab.encoders.quantize import PrecisionError, check_precision
        from latlab.encoders.torch_export import to_torch

        torch = self._torch
        check_precision(precision)
        if precision == "int8":
            raise PrecisionError(
                f"backend {self.name!r} does not run int8 (latlab quantises with onnxruntime's "
                "tooling): measure int8 with --backend onnxruntime"
            )
        graph = resolve(network, batch=batch, input_shape=input_shape)
        torch.set_num_threads(threads)
        device = torch.device(f"cuda:{self.device_id}" if self.cuda else "cpu")
        module = to_torch(graph, seed=0).to(device)
        feeds = graph_inputs(graph, seed=0)
        inputs = [torch.from_numpy(arr).to(device) for arr in feeds.values()]
        details: dict[str, Any] = {"threads": torch.get_num_threads(), "device": str(device)}
        if precision == "bf16":
            # weights and float inputs in bfloat16: oneDNN's bf16 kernels (AVX512-BF16 / AMX
            # where the CPU has them; emulated, and slower than fp32, where it has neither)
            module = module.to(torch.bfloat16)
            inputs = [x.to(torch.bfloat16) if x.is_floating_point() else x for x in inputs]
            details["precision"] = {"label": "bf16", "cpu_bf16": cpu_bf16_flags()}

        if not self.cuda:

            def run() -> None:
                with torch.inference_mode():
                    module(*inputs)

            return Runner(run, details, module)

        def run_cuda() -> None:
            with torch.inference_mode():
                module(*inputs)
            torch.cuda.synchronize(device)

        return Runner(run_cuda, details, module)


def cuda_backend() -> TorchBackend:
    """The ``torch-cuda`` backend (registered in ``backends.BUILTIN_BACKENDS``)."""
    return TorchBackend(cuda=True)
