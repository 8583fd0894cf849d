"""The bundle as an MLflow pyfunc model (``mlflow models serve`` exposes it over HTTP).

The model is logged *from code* (:mod:`latlab.training.mlflow_pyfunc_entry`), not as a pickled
object: MLflow stores that small file, the bundle directory as the artifact ``bundle`` and a
copy of the ``latlab`` package as its code path, and loading rebuilds the model by running the
file and :meth:`BundleModel.load_context` -- which loads the bundle the safe way. Nothing is
unpickled on either side.

Input: a DataFrame with a ``network`` column of references or bare nb201 arch strings (or a
list of them). A bad row is the client's error: HTTP 400 with a one-line message naming the
row (``row 3: unknown network reference scheme ...``); a missing ``network`` column is refused
by the signature's schema check (HTTP 400 naming the column).
Output: a DataFrame with ``network``, ``latency_ms`` and, for calibrated bundles, ``lower_ms``
and ``upper_ms`` at the runtime parameter ``confidence`` (default: the bundle's).

Every bundle holds the model at ``BUNDLE/mlflow_model`` (:func:`save_bundle_model`), and
training logs it to the tracking server (:func:`log_bundle_model`). Served with::

    mlflow models serve -m BUNDLE/mlflow_model --env-manager local -p 5001
    mlflow models serve -m runs:/<run_id>/model --env-manager local -p 5001
    curl -X POST localhost:5001/invocations -H 'Content-Type: application/json' \\
         -d '{"dataframe_records": [{"network": "fcnn:8-16-4"}], "params": {"confidence": 0.8}}'

This module imports mlflow: import it only where MLflow is wanted.
"""

from __future__ import annotations

import os
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow.pyfunc
from mlflow.pyfunc import PythonModel

_PROGRESS_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
#: The folder a served model reads ``onnx:`` files from (relative names); unset: none are read.
#: Also settable as the model config key ``onnx_dir``.
ONNX_DIR_ENV = "LATLAB_SERVE_ONNX_DIR"
#: Name of the bundle artifact inside the MLflow model.
ARTIFACT = "bundle"


class BundleModel(PythonModel):  # type: ignore[misc]
    """pyfunc wrapper of a latlab bundle."""

    # The input schema comes from the explicit signature (see model_signature), not from type
    # hints on predict: this tells MLflow not to look for (and warn about) them.
    _skip_type_hint_validation = True

    # No type hints on these two: MLflow would try (and fail) to derive a schema from them.
    def load_context(self, context):  # type: ignore[no-untyped-def]
        from latlab.training.bundle import load_bundle

        self.bundle = load_bundle(context.artifacts[ARTIFACT])
        config = getattr(context, "model_config", None) or {}
        self.onnx_dir = os.environ.get(ONNX_DIR_ENV) or config.get("onnx_dir") or None

    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        from latlab.errors import LatlabError
        from latlab.training.bundle import references_of
        from latlab.training.feature_cache import normalise_network

        confidence = (params or {}).get("confidence")
        try:
            refs = [normalise_network(r, i) for i, r in enumerate(references_of(model_input))]
            served = confine_references(refs, getattr(self, "onnx_dir", None))
        except LatlabError as exc:
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None
        # rows whose file reference was resolved inside the allowed folder
        moved = [i for i, (a, b) in enumerate(zip(served, refs, strict=True)) if a != b]
        try:
            # One bundle (and its feature cache) serves every request of this process; the
            # cache is thread-safe, the models' predict calls are.
            frame = self.bundle.predict_frame(served, confidence)
        except LatlabError as exc:
            # A bad reference or confidence is the client's error (HTTP 400), in one line,
            # naming the client's reference, never the server path it was resolved to.
            text = str(exc)
            for i in moved:
                text = text.replace(served[i].partition(":")[2], str(refs[i]).partition(":")[2])
            raise MlflowException(text, error_code=INVALID_PARAMETER_VALUE) from None
        if moved:
            frame.loc[moved, "network"] = [refs[i] for i in moved]
        return frame


def confine_references(refs: list[Any], onnx_dir: str | None) -> list[Any]:
    """The references a served model resolves for a client (normalised ones: see
    :func:`latlab.training.feature_cache.normalise_network`): schemes that read no file pass
    unchanged; file references only inside ``onnx_dir``
    (:func:`latlab.datasets.references.confine_reference`). Raises naming the row."""
    from latlab.datasets.references import confine_reference
    from latlab.errors import LatlabError

    out = []
    for i, ref in enumerate(refs):
        try:
            out.append(confine_reference(ref, onnx_dir) if isinstance(ref, str) else ref)
        except LatlabError as exc:
            raise type(exc)(f"row {i}: {exc}") from None
    return out


def pip_requirements() -> list[str]:
    """Pinned runtime requirements of the logged model (those installed here)."""
    from latlab.training.bundle import RUNTIME_PACKAGES

    reqs = []
    for name in RUNTIME_PACKAGES:
        try:
            reqs.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return reqs


def model_signature(calibrated: bool, confidence: float) -> Any:
    """Input ``network`` (string); output latency (and bounds); runtime param ``confidence``."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

    inputs: list[Any] = [ColSpec("string", "network")]
    outputs: list[Any] = [ColSpec("string", "network"), ColSpec("double", "latency_ms")]
    if calibrated:
        outputs += [
            ColSpec("double", "lower_ms"),
            ColSpec("double", "upper_ms"),
            ColSpec("double", "confidence"),
            ColSpec("boolean", "out_of_distribution", required=False),
        ]
    return ModelSignature(
        inputs=Schema(inputs),
        outputs=Schema(outputs),
        params=ParamSchema([ParamSpec("confidence", "double", float(confidence))]),
    )


def bundle_copy(bundle_dir: str | Path, dest: Path) -> Path:
    """A copy of the bundle without its ``mlflow_model`` folder (which holds a bundle copy
    itself): what the pyfunc model carries as its ``bundle`` artifact."""
    import shutil

    from latlab.training.bundle import MLFLOW_MODEL_DIR

    target = dest / "bundle"
    shutil.copytree(Path(bundle_dir), target, ignore=shutil.ignore_patterns(MLFLOW_MODEL_DIR))
    return target


def save_bundle_model(bundle_dir: str | Path, path: str | Path) -> Path:
    """Save the bundle as a pyfunc model directory at ``path`` (which must not exist): what
    ``mlflow models serve -m PATH --env-manager local`` serves and
    ``mlflow.pyfunc.load_model(PATH)`` loads."""
    from latlab.training.bundle import read_manifest
    from latlab.training.tracking import copy_package_source, scratch_dir

    manifest = read_manifest(bundle_dir)
    conf = manifest.get("conformal") or {}
    signature = model_signature(bool(conf), float(conf.get("confidence", 0.9)))
    quiet = os.environ.get(_PROGRESS_ENV)
    os.environ[_PROGRESS_ENV] = "false"  # no "Downloading artifacts" bar on a bundle save
    try:
        with scratch_dir() as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            code = copy_package_source(tmp)
            art = bundle_copy(bundle_dir, tmp)
            mlflow.pyfunc.save_model(
                path=str(path),
                python_model=str(Path(__file__).with_name("mlflow_pyfunc_entry.py")),
                artifacts={ARTIFACT: str(art)},
                code_paths=[str(code)],
                signature=signature,
                pip_requirements=pip_requirements(),
            )
    finally:
        if quiet is None:
            os.environ.pop(_PROGRESS_ENV, None)
        else:
            os.environ[_PROGRESS_ENV] = quiet
    return Path(path)


def log_bundle_model(bundle_dir: str | Path, name: str = "model") -> str:
    """Log the bundle as a pyfunc model in the active run; returns its model URI."""
    from latlab.training.bundle import read_manifest
    from latlab.training.tracking import copy_package_source, scratch_dir

    manifest = read_manifest(bundle_dir)
    conf = manifest.get("conformal") or {}
    signature = model_signature(bool(conf), float(conf.get("confidence", 0.9)))
    with scratch_dir() as tmp, warnings.catch_warnings():
        # MLflow warns that no input example is given: the signature is explicit instead
        # (an example would make it load and run the model once more at logging time).
        warnings.simplefilter("ignore", UserWarning)
        code = copy_package_source(tmp)
        art = bundle_copy(bundle_dir, tmp)
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=str(Path(__file__).with_name("mlflow_pyfunc_entry.py")),
            artifacts={ARTIFACT: str(art)},
            code_paths=[str(code)],
            signature=signature,
            pip_requirements=pip_requirements(),
        )
    return str(info.model_uri)
