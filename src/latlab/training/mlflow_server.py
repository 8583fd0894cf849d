"""A bundle served over HTTP by ``mlflow models serve``, and a bounded load test against it.

:class:`ModelServer` starts ``mlflow models serve -m BUNDLE/mlflow_model --env-manager local``
on a free loopback port (the environment's ``bin`` put on ``PATH``, which the local env
manager needs), waits for ``/ping``, and stops the server by the process id it started (its
process group: the server's workers go with it). :func:`invoke` posts one request;
:func:`load_test` runs ``clients`` concurrent clients sending ``requests`` batches and reports
throughput and latency percentiles. Standard library only on the client side (urllib,
threads): the measured latency is the server's, not a client library's.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from latlab.errors import BundleError

log = logging.getLogger(__name__)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def free_port() -> int:
    """A TCP port free on the loopback interface now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def model_dir(path: str | os.PathLike[str], *, verify: bool = True) -> Path:
    """The pyfunc model of a bundle (``BUNDLE/mlflow_model``), or ``path`` if it is one.

    With ``verify`` (the default) the model must belong to a bundle whose manifest covers it,
    and its files are checked against those checksums before MLflow is handed the folder
    (MLflow reads ``MLmodel`` and runs the model's code, see docs/serving.md).
    """
    from latlab.training.bundle import MANIFEST, MLFLOW_MODEL_DIR, verify_mlflow_model

    p = Path(path)
    if (p / "MLmodel").is_file():
        found = p
    elif (p / MLFLOW_MODEL_DIR / "MLmodel").is_file():
        found = p / MLFLOW_MODEL_DIR
    else:
        raise BundleError(
            f"no MLflow model in {p} (neither {p}/MLmodel nor {p}/{MLFLOW_MODEL_DIR}/MLmodel)"
        )
    if not verify:
        return found
    if found.name != MLFLOW_MODEL_DIR or not (found.parent / MANIFEST).is_file():
        raise BundleError(
            f"{found} is not the {MLFLOW_MODEL_DIR} folder of a latlab bundle: its files cannot "
            "be checked (serve BUNDLE, or pass verify=False to serve it unchecked)"
        )
    return verify_mlflow_model(found.parent)


class ModelServer:
    """``mlflow models serve`` of one model on loopback, as a context manager."""

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        port: int | None = None,
        workers: int = 1,
        startup_timeout_s: float = 180.0,
        log_path: str | os.PathLike[str] | None = None,
        verify: bool = True,
        onnx_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.model = model_dir(model, verify=verify)
        #: The folder whose ONNX files clients may name (``onnx:`` references); none by default.
        self.onnx_dir = onnx_dir
        self.port = port or free_port()
        self.workers = workers
        self.startup_timeout_s = startup_timeout_s
        self.log_path = Path(log_path) if log_path else None
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ModelServer:
        env = dict(os.environ)
        bindir = str(Path(sys.executable).parent)
        env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
        if self.onnx_dir is not None:
            env["LATLAB_SERVE_ONNX_DIR"] = str(Path(self.onnx_dir).resolve())
        cmd = [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            str(self.model),
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-w",
            str(self.workers),
        ]
        self._log = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BundleError(
                    f"mlflow models serve exited with code {self.proc.returncode} before "
                    f"answering /ping (log: {self.log_path or 'not kept'})"
                )
            try:
                with urllib.request.urlopen(self.url + "/ping", timeout=2) as r:
                    if r.status == 200:
                        log.info("model server up on %s (pid %d)", self.url, self.proc.pid)
                        return self
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.25)
        self.stop()
        raise BundleError(
            f"mlflow models serve did not answer /ping within {self.startup_timeout_s:g} s"
        )

    def stop(self) -> None:
        """Stop the server by its process id (SIGTERM to its group, SIGKILL after 15 s)."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)  # the session started with the server
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=15)
            # The server's workers share its process group: wait for them too, then kill what
            # is left of the group (only processes this server started are in it).
            deadline = time.monotonic() + 10
            while _group_alive(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _group_alive(proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)
        if self._log not in (None, subprocess.DEVNULL):
            self._log.close()
        self._log = None

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def invoke(
    url: str, payload: dict[str, Any], timeout: float = 60.0
) -> tuple[int, dict[str, Any] | str]:
    """POST ``payload`` to ``url/invocations``: ``(status, parsed JSON or text)``; HTTP
    errors are returned, not raised."""
    data = json.dumps(payload).encode()
    req = urllib.request.Request(
        url + "/invocations", data=data, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, body = r.status, r.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    text = body.decode("utf-8", "replace")
    try:
        return status, json.loads(text)
    except json.JSONDecodeError:
        return status, text


def records(refs: Sequence[str]) -> dict[str, Any]:
    return {"dataframe_records": [{"network": r} for r in refs]}


def load_test(
    url: str,
    refs: Sequence[str],
    *,
    clients: int = 2,
    requests: int = 1000,
    batch: int = 64,
    confidence: float | None = None,
    seed: int = 0,
    timeout: float = 60.0,
) -> dict[str, Any]:
    """``clients`` threads send ``requests`` requests in all, each a random batch of ``batch``
    references; returns throughput (requests/s, networks/s), latency p50/p90/p99/max (ms) and
    the number of failed requests (non-200, or a reply without one row per network)."""
    rng = np.random.default_rng(seed)
    picks = [rng.choice(len(refs), size=batch) for _ in range(requests)]
    payloads = []
    for idx in picks:
        p = records([refs[int(i)] for i in idx])
        if confidence is not None:
            p["params"] = {"confidence": confidence}
        payloads.append(p)
    latencies = np.zeros(requests)
    failures: list[str] = []
    lock = threading.Lock()

    def one(k: int) -> None:
        t0 = time.perf_counter()
        try:
            status, body = invoke(url, payloads[k], timeout)
            ok = (
                status == 200
                and isinstance(body, dict)
                and len(body.get("predictions", [])) == batch
            )
            why = "" if ok else f"request {k}: HTTP {status}: {str(body)[:200]}"
        except OSError as exc:
            why = f"request {k}: {exc}"
        latencies[k] = 1000 * (time.perf_counter() - t0)
        if why:
            with lock:
                failures.append(why)

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(one, range(requests)))
    wall = time.perf_counter() - start
    return {
        "clients": clients,
        "requests": requests,
        "batch": batch,
        "failed": len(failures),
        "failures": failures[:5],
        "wall_s": wall,
        "requests_per_s": requests / wall,
        "networks_per_s": requests * batch / wall,
        "p50_ms": float(np.percentile(latencies, 50)),
        "p90_ms": float(np.percentile(latencies, 90)),
        "p99_ms": float(np.percentile(latencies, 99)),
        "max_ms": float(latencies.max()),
    }
