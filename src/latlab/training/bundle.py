"""Bundles: a trained predictor as a directory that reloads to the same predictions.

::

    BUNDLE/
      manifest.json        versioned manifest (below)
      predictor/           the predictor (predictor.json + model files: LightGBM text,
                           safetensors, skops, JSON), see LatencyPredictor.save
      conformal/           the conformal calibration, when the bundle gives intervals; it
                           holds the predictor (conformal/base/) instead of predictor/
      split.json           the references of the train / validation / calibration / test rows

``manifest.json`` holds ``schema_version`` (:data:`SCHEMA_VERSION`), ``latlab_version``, the
predictor name, parameters and tuned parameters, the feature spec and scaling statistics, the
conformal method and calibration size, the device column and fingerprint, the dataset source,
hash and size, the split, validation/test metrics, the training environment, the MLflow run,
and the SHA-256 of every other file.

Loading never unpickles anything: JSON, safetensors, LightGBM text and skops (with its
trusted-type check) only. A bundle written by a newer schema, a file whose checksum does not
match, or a missing file is refused with a :class:`~latlab.errors.BundleError` naming it.
A bundle is written into a temporary sibling directory and renamed into place, so a crash
never leaves half a bundle, and an existing bundle is replaced only once the new one is whole.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from latlab.confidence import check_confidence
from latlab.errors import BundleError, DataError
from latlab.fileio import atomic_write_text, inside, make_parent, prepare_output
from latlab.jsonio import jsonable
from latlab.predictors.base import IntervalPredictor, LatencyPredictor, Predictor
from latlab.training import intervals
from latlab.training.feature_cache import DEFAULT_CACHE_SIZE, CachedPredictor, FeatureCache

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
FORMAT = "latlab-bundle"
MANIFEST = "manifest.json"
PREDICTOR_DIR = "predictor"
CONFORMAL_DIR = "conformal"
SPLIT_FILE = "split.json"
#: The bundle as an MLflow pyfunc model (``mlflow models serve -m BUNDLE/mlflow_model``).
MLFLOW_MODEL_DIR = "mlflow_model"

#: latlab's runtime dependencies: pinned as a logged MLflow model's requirements
#: (:mod:`latlab.training.mlflow_pyfunc`) and recorded in a bundle's training environment.
RUNTIME_PACKAGES = (
    "numpy",
    "scipy",
    "pandas",
    "scikit-learn",
    "lightgbm",
    "torch",
    "torch-geometric",
    "onnx",
    "onnxruntime",
    "networkx",
    "crepes",
    "skops",
    "safetensors",
    "sqlalchemy",
    "pyarrow",
    "psutil",
    "threadpoolctl",
    "mlflow",
)
#: Packages whose versions are recorded as the training environment: the runtime ones and
#: the tuner.
ENV_PACKAGES = (*RUNTIME_PACKAGES, "optuna")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def environment() -> dict[str, Any]:
    """Python, platform, package versions and the machine, for the manifest and MLflow."""
    from latlab import __version__

    packages: dict[str, str] = {}
    for name in ENV_PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    machine: dict[str, Any] = {}
    try:
        from latlab.datasets.measure.fingerprint import fingerprint_digest, machine_fingerprint

        fp = machine_fingerprint()
        machine = {
            "digest": fingerprint_digest(fp),
            "cpu": fp.get("cpu", {}).get("model") if isinstance(fp.get("cpu"), dict) else None,
        }
    except Exception as exc:  # the fingerprint is informative only
        log.debug("no machine fingerprint: %s", exc)
    return {
        "latlab": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": packages,
        "machine": machine,
    }


def feature_spec(predictor_dir: Path, keys: Sequence[str]) -> dict[str, Any] | None:
    """The entries ``keys`` of a saved predictor's state (its feature spec and scaling
    statistics, as the predictor class declares in ``feature_state_keys``), if any; copied
    into the manifest so that they are readable without the predictor's own files."""
    try:
        doc = json.loads((predictor_dir / "predictor.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    state = doc.get("state") or {}
    found = {k: state[k] for k in keys if k in state}
    return found or None


# --------------------------------------------------------------------------- the bundle


@dataclass
class Bundle:
    """A loaded bundle: the predictor, its conformal calibration (if any) and the manifest."""

    path: Path
    manifest: dict[str, Any]
    predictor: Predictor
    conformal: IntervalPredictor | None = None
    split: dict[str, list[str]] = field(default_factory=dict)
    #: Capacity of the feature cache (networks); 0 switches caching off.
    cache_size: int = DEFAULT_CACHE_SIZE
    _fast: Any = field(default=None, init=False, repr=False, compare=False)
    _fast_lock: Any = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    # -------------------------------------------------------------- the fast path

    @property
    def fast(self) -> CachedPredictor:
        """The predictor behind this bundle's feature cache (created on first use)."""
        if self._fast is None:
            with self._fast_lock:
                if self._fast is None:
                    self._fast = CachedPredictor(self.predictor, FeatureCache(self.cache_size))
        return self._fast  # type: ignore[no-any-return]

    @property
    def cache(self) -> FeatureCache:
        """The feature cache: encoded networks keyed by their hash (``cache.stats()``)."""
        return self.fast.cache

    # -------------------------------------------------------------- what it is

    @property
    def calibrated(self) -> bool:
        """Whether the bundle gives prediction intervals."""
        return self.conformal is not None

    @property
    def predictor_name(self) -> str:
        return str(self.manifest["predictor"]["name"])

    @property
    def target(self) -> str:
        """The device (latency column) the predictor was trained for."""
        return str(self.manifest.get("target", ""))

    @property
    def confidence(self) -> float:
        """The default confidence of intervals (the one the bundle was validated at)."""
        conf = self.manifest.get("conformal") or {}
        return float(conf.get("confidence", 0.9))

    @property
    def warnings(self) -> list[str]:
        """Warnings recorded at training (small calibration set, ...) and from the wrapper."""
        out = list((self.manifest.get("conformal") or {}).get("warnings", []))
        if self.conformal is not None:
            out += [w for w in intervals.warnings_of(self.conformal) if w not in out]
        return out

    def trained_on(self) -> set[str]:
        """References of the networks used for fitting, validation or calibration."""
        return {r for part in ("train", "val", "cal") for r in self.split.get(part, [])}

    # -------------------------------------------------------------- predictions

    def predict(self, networks: Sequence[Any]) -> np.ndarray:
        """Latency in ms, one per network, in input order: references, NetworkGraph objects
        or bare nb201 arch strings, any number per call; encoded networks are cached."""
        return self.fast.predict(networks)

    def predict_interval(
        self,
        networks: Sequence[Any],
        confidence: float | None = None,
        *,
        point_ms: Any = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds (ms) at ``confidence`` (default: :attr:`confidence`);
        ``point_ms`` may pass :meth:`predict`'s result for these networks to save a pass."""
        c = check_confidence(self.confidence if confidence is None else confidence)
        return self._interval(networks, c, point_ms)

    def _interval(
        self, networks: Sequence[Any], c: float, point_ms: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`predict_interval` at an already checked confidence ``c``."""
        if self.conformal is None:
            raise BundleError(
                f"bundle {self.path} has no conformal calibration: it gives point predictions "
                "only (train with --conformal METHOD)"
            )
        nets = self.fast.normalise(networks)
        if point_ms is None:
            point_ms = self.fast.predict(nets)
        low, high = intervals.predict_interval(self.conformal, nets, c, point_ms)
        return np.asarray(low, dtype=float).reshape(-1), np.asarray(high, dtype=float).reshape(-1)

    def predict_frame(self, networks: Sequence[Any], confidence: float | None = None) -> Any:
        """A DataFrame: ``network``, ``latency_ms`` and, when calibrated, ``lower_ms``,
        ``upper_ms``, ``confidence`` (and ``out_of_distribution`` for methods that flag
        networks unlike the calibration ones) -- what ``latlab predict`` and the pyfunc model
        give."""
        import pandas as pd

        from latlab.datasets.references import reference_of

        nets = self.fast.normalise(networks)
        point = self.predict(nets)
        out = pd.DataFrame({"network": [reference_of(n) for n in nets], "latency_ms": point})
        if self.calibrated:
            c = check_confidence(self.confidence if confidence is None else confidence)
            low, high = self._interval(nets, c, point)
            out["lower_ms"] = low
            out["upper_ms"] = high
            out["confidence"] = c
            assert self.conformal is not None  # calibrated
            ood = intervals.ood_mask(self.conformal, nets)
            if ood is not None:
                out["out_of_distribution"] = np.asarray(ood, dtype=bool)
        elif confidence is not None:
            check_confidence(confidence)
        return out


def references_of(model_input: Any) -> list[str]:
    """References from a pyfunc input: a DataFrame (``network`` column, else the first), a
    Series, a list/array of strings, or a dict with a ``network`` list."""
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        if model_input.shape[1] == 0:
            raise DataError("the input has no column: expected a 'network' column of references")
        col = model_input["network"] if "network" in model_input else model_input.iloc[:, 0]
        return [str(v) for v in col]
    if isinstance(model_input, dict):
        if "network" not in model_input:
            raise DataError("the input has no 'network' key")
        values = model_input["network"]
        return [values] if isinstance(values, str) else [str(v) for v in values]
    if isinstance(model_input, str):
        return [model_input]
    return [str(v) for v in list(model_input)]


# --------------------------------------------------------------------------- saving


def check_bundle_out(out: str | os.PathLike[str], what: str = "bundle") -> Path:
    """Check, before any work, that a bundle can be written at ``out`` (missing parent
    folders are created when it is saved). Refuses a file of that name and a folder that
    holds something other than a bundle (never overwritten). ``what`` names the option in
    messages (e.g. ``--out``)."""
    target = prepare_output(out, what, folder=True)
    if target.is_dir() and any(target.iterdir()) and not (target / MANIFEST).is_file():
        raise BundleError(
            f"cannot write bundle {target}: the folder exists and is not a latlab bundle "
            "(refusing to overwrite it)"
        )
    return target


#: Staging and replaced-bundle folders are named ``.NAME.PID.<random>.tmp`` / ``.old``: the
#: process id lets a later save remove those a killed process left behind.
_STAGE_SUFFIXES = (".tmp", ".old")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


def clean_stale_staging(out: Path) -> list[Path]:
    """Remove staging folders of ``out`` left by a process that no longer runs (kill -9 of
    ``latlab train``); returns those removed. Folders of live processes are kept."""
    parent = out.parent if str(out.parent) else Path(".")
    removed = []
    for cand in parent.glob(f".{out.name}.*"):
        if not cand.is_dir() or cand.is_symlink() or cand.suffix not in _STAGE_SUFFIXES:
            continue
        pid_text = cand.name[len(out.name) + 2 :].split(".", 1)[0]
        if not pid_text.isdigit() or _pid_alive(int(pid_text)):
            continue
        shutil.rmtree(cand, ignore_errors=True)
        removed.append(cand)
        log.info("removed %s, left by an interrupted save", cand)
    return removed


def _staging_dir(out: Path) -> Path:
    check_bundle_out(out)
    parent = make_parent(out)
    clean_stale_staging(out)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.{os.getpid()}.", suffix=".tmp", dir=parent))
    # mkdtemp makes the folder private (0700); the bundle gets the usual mode (umask).
    umask = os.umask(0)
    os.umask(umask)
    stage.chmod(0o777 & ~umask)
    return stage


def _checksums(root: Path, under: Path | None = None) -> dict[str, str]:
    """SHA-256 of every file below ``under`` (default: ``root``), keyed by its path
    relative to ``root``."""
    top = under if under is not None else root
    return {
        p.relative_to(root).as_posix(): _sha256(p) for p in sorted(top.rglob("*")) if p.is_file()
    }


def save_bundle(
    out: str | os.PathLike[str],
    predictor: LatencyPredictor,
    *,
    conformal: IntervalPredictor | None = None,
    manifest: dict[str, Any] | None = None,
    split: dict[str, list[str]] | None = None,
    mlflow_model: bool = True,
) -> Path:
    """Write a bundle directory at ``out`` (atomically; an existing bundle is replaced).

    ``predictor`` is a fitted :class:`~latlab.predictors.base.LatencyPredictor`, ``conformal``
    its calibrated wrapper or ``None``; ``manifest`` adds fields (dataset, device, split,
    metrics, tuning, ...) to the ones written here; ``split`` maps part names to references;
    ``mlflow_model`` also saves the bundle as an MLflow pyfunc model in ``mlflow_model/``
    (skipped, with a warning, where MLflow is not installed).
    """
    from latlab import __version__

    target = Path(out)
    stage = _staging_dir(target)
    try:
        conf_doc = None
        predictor_dir = PREDICTOR_DIR
        if conformal is not None:
            conformal.save(stage / CONFORMAL_DIR)
            conf_doc = dict((manifest or {}).get("conformal") or {})
            conf_doc.setdefault("warnings", intervals.warnings_of(conformal))
            conf_doc["dir"] = CONFORMAL_DIR
            # The wrapper saves its base predictor with it: the bundle points there rather
            # than holding a second copy.
            inner = intervals.base_dir(stage / CONFORMAL_DIR)
            if inner is not None:
                predictor_dir = inner.relative_to(stage).as_posix()
        if predictor_dir == PREDICTOR_DIR:
            predictor.save(stage / PREDICTOR_DIR)
        if split is not None:
            (stage / SPLIT_FILE).write_text(json.dumps(split, separators=(",", ":")))
        params = predictor.get_params(deep=False)
        doc: dict[str, Any] = {
            "format": FORMAT,
            "schema_version": SCHEMA_VERSION,
            "latlab_version": __version__,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            **(manifest or {}),
        }
        doc["predictor"] = {
            "name": predictor.name,
            "params": params,
            **((manifest or {}).get("predictor") or {}),
            "dir": predictor_dir,
        }
        keys = predictor.feature_state_keys
        doc["features"] = feature_spec(stage / predictor_dir, keys)
        doc["conformal"] = conf_doc
        doc.setdefault("environment", environment())
        doc["files"] = _checksums(stage)
        want_model = mlflow_model and _mlflow_available()
        doc["mlflow_model"] = MLFLOW_MODEL_DIR if want_model else None
        _write_manifest(stage, doc)
        if want_model:
            # After the manifest: the model carries a copy of the whole bundle (checked by its
            # own manifest when the model loads it). Then every file of the model, MLflow's
            # MLmodel and code included, joins this manifest's checksums, which latlab checks
            # before it hands the folder to MLflow (verify_mlflow_model).
            from latlab.training.mlflow_pyfunc import save_bundle_model

            save_bundle_model(stage, stage / MLFLOW_MODEL_DIR)
            doc["files"].update(_checksums(stage, stage / MLFLOW_MODEL_DIR))
            _write_manifest(stage, doc)
        _replace_dir(stage, target)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return target


def _write_manifest(stage: Path, doc: dict[str, Any]) -> None:
    text = json.dumps(jsonable(doc), indent=1, allow_nan=False)
    atomic_write_text(stage / MANIFEST, text + "\n")


def _mlflow_available() -> bool:
    import importlib.util

    if importlib.util.find_spec("mlflow") is None:
        log.warning("MLflow is not installed: the bundle has no mlflow_model (pip install mlflow)")
        return False
    return True


def _replace_dir(stage: Path, target: Path) -> None:
    """Move ``stage`` to ``target``; a previous bundle there is removed only afterwards."""
    old = None
    if target.exists():
        old = Path(
            tempfile.mkdtemp(
                prefix=f".{target.name}.{os.getpid()}.", suffix=".old", dir=target.parent
            )
        )
        old.rmdir()
        os.replace(target, old)
    try:
        os.replace(stage, target)
    except BaseException:
        if old is not None:
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------- loading


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of the bundle at ``path``, checked for format and schema version."""
    d = Path(path)
    if not d.exists():
        raise BundleError(f"bundle not found: {d}")
    if not d.is_dir():
        raise BundleError(f"not a bundle (not a directory): {d}")
    mpath = d / MANIFEST
    try:
        doc = json.loads(mpath.read_text())
    except FileNotFoundError:
        raise BundleError(f"not a latlab bundle: no {MANIFEST} in {d}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"corrupt {mpath}: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BundleError(f"not a latlab bundle: {mpath} has no format {FORMAT!r}")
    version = doc.get("schema_version")
    if not isinstance(version, int) or version < 1:
        raise BundleError(f"corrupt {mpath}: schema_version {version!r}")
    if version > SCHEMA_VERSION:
        raise BundleError(
            f"bundle {d} has schema version {version}, newer than this latlab "
            f"({doc.get('latlab_version', '?')} wrote it; this one reads up to "
            f"{SCHEMA_VERSION}): upgrade latlab"
        )
    if "metrics" in doc:  # bundles before the one interval-width name wrote mean_rel_width
        from latlab.training.metrics import upgrade_metric_keys

        doc["metrics"] = upgrade_metric_keys(doc["metrics"])
    return doc


def _listed_files(path: Path, manifest: dict[str, Any]) -> dict[str, str] | None:
    """The manifest's ``files`` (relative path -> SHA-256), each path checked to stay inside
    the bundle; ``None`` when the manifest has no checksums."""
    files = manifest.get("files")
    if files is None:
        return None
    if not isinstance(files, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in files.items()
    ):
        raise BundleError(
            f"corrupt {path / MANIFEST}: 'files' must map file names to SHA-256 digests "
            f"(got a {type(files).__name__})"
        )
    for rel in files:
        inside(path, rel, f"bundle {path}: listed file")
    return files


def _tree_files(path: Path, skip: str | None = None) -> list[str]:
    """Every file below ``path`` (relative, POSIX), except the manifest and the folder
    ``skip``; a symbolic link anywhere is refused (a bundle holds plain files only)."""
    out = []
    for root, dirs, names in os.walk(path, followlinks=False):
        rel_root = Path(root).relative_to(path)
        if skip is not None and rel_root == Path("."):
            dirs[:] = [d for d in dirs if d != skip]
        for name in [*dirs, *names]:
            if (Path(root) / name).is_symlink():
                rel = (rel_root / name).as_posix()
                raise BundleError(
                    f"bundle {path} holds a symbolic link {rel}: bundles hold plain files only"
                )
        for name in names:
            rel = (rel_root / name).as_posix()
            if rel != MANIFEST:
                out.append(rel)
    return sorted(out)


def verify_files(path: Path, manifest: dict[str, Any], *, only: str | None = None) -> None:
    """Check the bundle against the manifest's checksums: every listed file present and
    matching its SHA-256, every file of the bundle listed, no path or link leaving it.

    ``only`` restricts the check to one folder (``mlflow_model``); by default that folder is
    left out (:func:`load_bundle` never opens it; :func:`verify_mlflow_model` checks it).
    A manifest without checksums is refused. Messages name files by their place in the
    bundle, never a digest."""
    path = Path(path)
    files = _listed_files(path, manifest)
    if files is None:
        raise BundleError(
            f"bundle {path} has no checksums ('files' missing from its {MANIFEST}): refusing "
            "to load it unverified (load_bundle(..., verify=False) loads it anyway)"
        )
    prefix = None if only is None else only.rstrip("/") + "/"
    if only is None:
        present = _tree_files(path, skip=MLFLOW_MODEL_DIR)
    else:
        sub = inside(path, only, f"bundle {path}: folder")
        present = [f"{prefix}{f}" for f in _tree_files(sub)] if sub.is_dir() else []
    wanted = {
        rel: digest
        for rel, digest in files.items()
        if (rel.startswith(prefix) if prefix else not rel.startswith(MLFLOW_MODEL_DIR + "/"))
    }
    if prefix and not wanted:
        raise BundleError(
            f"bundle {path}: its {MANIFEST} has no checksums for {only}/ (a bundle saved "
            "before latlab covered it): save the bundle again"
        )
    unlisted = sorted(set(present) - set(wanted))
    if unlisted:
        raise BundleError(
            f"bundle {path}: {unlisted[0]} is not listed in its {MANIFEST} checksums "
            f"({len(unlisted)} unlisted file(s); added after saving?)"
        )
    for rel, digest in wanted.items():
        f = inside(path, rel, f"bundle {path}: listed file")
        if f.is_symlink() or not f.is_file():
            raise BundleError(f"bundle {path} lacks its file {rel}")
        if _sha256(f) != digest:
            raise BundleError(f"bundle {path}: {rel} does not match its checksum (modified?)")


def verify_mlflow_model(path: str | os.PathLike[str]) -> Path:
    """Check ``BUNDLE/mlflow_model`` against the bundle's checksums before MLflow loads it
    (MLflow runs the model's code and reads its MLmodel, which may name a pickle: it must be
    the one latlab wrote). ``path`` is the bundle or its ``mlflow_model`` folder; returns the
    model folder."""
    p = Path(path)
    bundle_dir = p.parent if p.name == MLFLOW_MODEL_DIR and not (p / MANIFEST).is_file() else p
    manifest = read_manifest(bundle_dir)
    model = manifest.get("mlflow_model")
    if not model:
        raise BundleError(f"bundle {bundle_dir} has no MLflow model (saved without MLflow)")
    if model != MLFLOW_MODEL_DIR:
        raise BundleError(f"corrupt {bundle_dir / MANIFEST}: mlflow_model {model!r}")
    verify_files(bundle_dir, manifest, only=MLFLOW_MODEL_DIR)
    return bundle_dir / MLFLOW_MODEL_DIR


def _section(manifest: dict[str, Any], key: str, path: Path) -> dict[str, Any]:
    value = manifest.get(key) or {}
    if not isinstance(value, dict):
        raise BundleError(f"corrupt {path / MANIFEST}: {key!r} must be an object")
    return value


def load_bundle(
    path: str | os.PathLike[str], *, verify: bool = True, cache_size: int = DEFAULT_CACHE_SIZE
) -> Bundle:
    """Load a bundle written by :func:`save_bundle` (safe: no pickle; see the module doc).

    Every file is checked against the manifest's checksums first (:func:`verify_files`);
    ``verify=False`` skips the digests (and loads a bundle without checksums) but never the
    rule that every path the bundle names stays inside its folder.
    ``cache_size`` bounds the feature cache of the loaded bundle (networks; 0: no cache)."""
    from latlab.predictors.base import load_predictor

    d = Path(path)
    manifest = read_manifest(d)
    if verify:
        verify_files(d, manifest)
    else:
        _listed_files(d, manifest)
    conformal = None
    conf = _section(manifest, "conformal", d)
    if conf:
        conformal = intervals.load(
            inside(d, conf.get("dir", CONFORMAL_DIR), f"bundle {d}: conformal folder")
        )
    predictor = getattr(conformal, "base", None)
    if predictor is None:
        pdir = _section(manifest, "predictor", d).get("dir", PREDICTOR_DIR)
        predictor = load_predictor(inside(d, pdir, f"bundle {d}: predictor folder"))
    split: dict[str, list[str]] = {}
    split_path = inside(d, SPLIT_FILE)
    if split_path.is_file():
        try:
            split = json.loads(split_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BundleError(f"corrupt {split_path}: {exc}") from None
        if not isinstance(split, dict):
            raise BundleError(f"corrupt {split_path}: expected an object of reference lists")
    return Bundle(d, manifest, predictor, conformal, split, cache_size=cache_size)
