"""onnxruntime backends: ``onnxruntime`` (CPU, the default) and ``onnxruntime-cuda``.

Session settings follow the measurement protocol: ``intra_op_num_threads`` = the requested
threads, one inter-op thread, sequential execution, all graph optimisations, and thread
spinning off (``session.intra_op.allow_spinning = 0``): spinning threads burn the cores between
runs, which makes latencies depend on the gap between calls and steals time from other
processes. The inputs are fixed, seeded arrays created once.

The CUDA variant binds inputs and outputs on the GPU (IO binding) so that only the inference
is timed, not host-device copies, and synchronises before returning. It fails with one line when
the installed onnxruntime has no ``CUDAExecutionProvider`` (the ``onnxruntime-gpu`` package
provides it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from latlab.datasets.measure.inputs import fixed_inputs
from latlab.encoders.ir import NetworkGraph
from latlab.errors import MeasurementError


class Runner:
    """A prepared inference: calling it runs once; ``details`` is recorded with the result."""

    def __init__(self, fn: Any, details: dict[str, Any], keep: Any = None) -> None:
        self._fn = fn
        self.details = details
        self._keep = keep  # objects the callable needs alive (session, bindings)

    def __call__(self) -> None:
        self._fn()


def precision_details(model: Any, network: Any) -> dict[str, Any]:
    """The precision a quantised model runs at, recorded with its measurements: the quantised
    graph's report (:func:`latlab.encoders.quantize.qdq_report`) and the kernels onnxruntime
    executes at batch 1 (:func:`latlab.datasets.bench.kernels_quant.executed_precision`); the
    label is ``int8`` only when both say every MAC is int8 (``mixed`` is logged as a warning)."""
    import logging

    from latlab.datasets.bench.kernels_quant import executed_precision
    from latlab.encoders.quantize import qdq_report

    graph = qdq_report(model)
    try:
        executed = executed_precision(network)
    except MeasurementError as exc:  # e.g. an input shape only this measurement knows
        executed = {"label": "unknown", "error": str(exc)}
    # int8 only when the executed kernels confirm it; unknown counts as not confirmed
    label = executed["label"] if graph.label == "int8" else graph.label
    if label == "unknown":
        label = "int8 (graph only)"
    out = {"label": label, "graph": graph.as_dict(), "executed": executed}
    if label != "int8":
        logging.getLogger(__name__).warning(
            "%s runs at %s precision (%s); measured as it runs",
            network if isinstance(network, str) else network.reference,
            label,
            graph.summary(),
        )
    return out


class OnnxRuntimeBackend:
    """Runs the network's ONNX model in an onnxruntime ``InferenceSession``."""

    def __init__(self, cuda: bool = False, device_id: int = 0) -> None:
        import onnxruntime as ort

        self._ort = ort
        self.cuda = cuda
        self.device_id = device_id
        self.name = "onnxruntime-cuda" if cuda else "onnxruntime"
        if cuda and "CUDAExecutionProvider" not in ort.get_available_providers():
            raise MeasurementError(
                "backend 'onnxruntime-cuda' needs onnxruntime's CUDAExecutionProvider, which this "
                f"onnxruntime {ort.__version__} does not have (available: "
                f"{', '.join(ort.get_available_providers())}); install onnxruntime-gpu on a "
                "CUDA machine"
            )

    @property
    def providers(self) -> list[Any]:
        if self.cuda:
            return [
                ("CUDAExecutionProvider", {"device_id": self.device_id}),
                "CPUExecutionProvider",
            ]
        return ["CPUExecutionProvider"]

    def info(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "library": "onnxruntime",
            "version": self._ort.__version__,
            "providers": [p if isinstance(p, str) else p[0] for p in self.providers],
            "available_providers": list(self._ort.get_available_providers()),
            "device": f"cuda:{self.device_id}" if self.cuda else "cpu",
        }

    def session_options(
        self, threads: int, mode: str = "sequential", inter_op_threads: int = 1
    ) -> Any:
        """The protocol's session options (exposed so that tests can check them).

        ``mode="parallel"`` runs independent branches of the graph at once on
        ``inter_op_threads`` threads (onnxruntime's ``ORT_PARALLEL``).
        """
        if mode not in ("sequential", "parallel"):
            raise MeasurementError(f"unknown execution mode {mode!r} (sequential, parallel)")
        so = self._ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = inter_op_threads
        so.execution_mode = (
            self._ort.ExecutionMode.ORT_PARALLEL
            if mode == "parallel"
            else self._ort.ExecutionMode.ORT_SEQUENTIAL
        )
        so.graph_optimization_level = self._ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.add_session_config_entry("session.inter_op.allow_spinning", "0")
        so.log_severity_level = 3
        return so

    def prepare(
        self,
        network: str | NetworkGraph,
        batch: int,
        threads: int,
        input_shape: Sequence[int] | None = None,
        mode: str = "sequential",
        inter_op_threads: int = 1,
        precision: str = "fp32",
    ) -> Runner:
        from latlab.datasets.references import onnx_model

        model = onnx_model(network, batch=batch, input_shape=input_shape, precision=precision)
        feeds = fixed_inputs(network, model, batch, input_shape, seed=0)
        so = self.session_options(threads, mode, inter_op_threads)
        ort = self._ort
        session = ort.InferenceSession(model.SerializeToString(), so, providers=self.providers)
        used = session.get_providers()
        if self.cuda and used[:1] != ["CUDAExecutionProvider"]:
            raise MeasurementError(
                f"onnxruntime did not place {network!s:.80} on CUDA (providers: {used})"
            )
        outputs = [o.name for o in session.get_outputs()]
        details = {
            "providers": used,
            "intra_op_threads": threads,
            "inter_op_threads": inter_op_threads,
            "allow_spinning": False,
            "execution_mode": mode,
            "graph_optimization": "all",
        }
        if precision != "fp32":
            details["precision"] = precision_details(model, network)
        if not self.cuda:

            def run() -> None:
                session.run(outputs, feeds)

            return Runner(run, details, session)
        binding = session.io_binding()
        device_inputs = {
            name: ort.OrtValue.ortvalue_from_numpy(arr, "cuda", self.device_id)
            for name, arr in feeds.items()
        }
        for name, value in device_inputs.items():
            binding.bind_ortvalue_input(name, value)
        for name in outputs:
            binding.bind_output(name, "cuda", self.device_id)

        def run_cuda() -> None:
            session.run_with_iobinding(binding)
            binding.synchronize_outputs()

        return Runner(run_cuda, details, (session, binding, device_inputs))


def cuda_backend() -> OnnxRuntimeBackend:
    """The ``onnxruntime-cuda`` backend (registered in ``backends.BUILTIN_BACKENDS``)."""
    return OnnxRuntimeBackend(cuda=True)
