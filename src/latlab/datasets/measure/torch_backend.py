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

from latlab.datasets.measure.backends import register_backend
from latlab.datasets.measure.inputs import graph_inputs
from latlab.datasets.measure.onnxruntime_backend import Runner
from latlab.encoders.ir import NetworkGraph
from latlab.errors import MeasurementError


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
    ) -> Runner:
        from latlab.datasets.references import resolve
        from latlab.encoders.torch_export import to_torch

        torch = self._torch
        graph = resolve(network, batch=batch, input_shape=input_shape)
        torch.set_num_threads(threads)
        device = torch.device(f"cuda:{self.device_id}" if self.cuda else "cpu")
        module = to_torch(graph, seed=0).to(device)
        feeds = graph_inputs(graph, seed=0)
        inputs = [torch.from_numpy(arr).to(device) for arr in feeds.values()]
        details = {"threads": torch.get_num_threads(), "device": str(device)}

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


register_backend("torch", TorchBackend)
register_backend("torch-cuda", lambda: TorchBackend(cuda=True))
