"""One lazy registry idiom (latlab.registry): names known without imports, plug-ins by entry
point, every built-in entry loading to what its name says."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from latlab.errors import DataError
from latlab.predictors.conformal.base import METHODS
from latlab.registry import Registry
from latlab.training.intervals import CONFORMAL_METHODS

SRC = Path(__file__).resolve().parents[1] / "src"


def _python(code: str, extra_path: Path | None = None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), str(extra_path or "")) if p)
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _doc_example(heading: str) -> str:
    """The first python block after ``heading`` in docs/DEVELOPING.md (kept runnable here)."""
    text = (SRC.parent / "docs" / "DEVELOPING.md").read_text()
    after = text[text.index(heading) :]
    return after.split("```python\n", 1)[1].split("```", 1)[0]


def test_listing_the_predictors_imports_none_of_them():
    got = _python(
        """
        import json, sys
        from latlab.predictors import PREDICTORS
        names = sorted(PREDICTORS)
        loaded = sorted(m for m in sys.modules if m.startswith("latlab.predictors."))
        heavy = [m for m in ("torch", "lightgbm", "torch_geometric") if m in sys.modules]
        print(json.dumps({"names": names, "loaded": loaded, "heavy": heavy}))
        """
    )
    from latlab.predictors.base import BUILTIN_PREDICTORS

    assert got["names"] == sorted(BUILTIN_PREDICTORS) and len(got["names"]) >= 15
    assert got["heavy"] == []
    # Only the registry's own modules, no predictor module.
    assert not [m for m in got["loaded"] if m.split(".")[2] in ("gcn", "fcnn", "gbm", "kernel")]


def test_a_plugin_predictor_registers_through_its_entry_point(tmp_path):
    pkg = tmp_path / "myplug"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        textwrap.dedent(
            """
            from latlab.predictors.flops import FlopsPredictor

            class DoubleFlops(FlopsPredictor):
                '''A FLOPs proxy registered from outside latlab.'''
                name = "double-flops"

            NOT_A_PREDICTOR = 3
            """
        )
    )
    info = tmp_path / "myplug-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: myplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[latlab.predictors]\n"
        "double-flops = myplug:DoubleFlops\n"
        "flops = myplug:DoubleFlops\n"  # a plug-in cannot replace a built-in
        "broken = myplug:NOT_A_PREDICTOR\n"
    )
    got = _python(
        """
        import json
        from latlab.errors import DataError
        from latlab.predictors import PREDICTORS, make_predictor
        p = make_predictor("double-flops")
        try:
            make_predictor("broken")
            broken = "accepted"
        except DataError as exc:
            broken = str(exc)
        print(json.dumps({"cls": type(p).__name__, "flops": PREDICTORS["flops"].__module__,
                          "listed": "double-flops" in sorted(PREDICTORS), "broken": broken}))
        """,
        extra_path=tmp_path,
    )
    assert got["cls"] == "DoubleFlops" and got["listed"]
    assert got["flops"] == "latlab.predictors.flops"
    assert got["broken"] == "predictor entry broken='myplug:NOT_A_PREDICTOR' is not a predictor"


def test_lazy_entries_load_once_and_unknown_names_are_listed():
    reg: Registry[object] = Registry("thing")
    reg.register("path", "pathlib:Path")
    reg.register("json", "json:dumps")
    assert reg.is_lazy("path") and "path" in reg
    assert reg["path"] is Path and not reg.is_lazy("path")
    reg.register("path", "os:getcwd")  # a lazy entry never replaces a loaded one
    assert reg["path"] is Path
    assert reg.unknown("nope") == "unknown thing 'nope' (known: json, path)"
    with pytest.raises(KeyError):
        reg["nope"]
    bad: Registry[object] = Registry("thing")
    bad.register("x", "no-colon")
    with pytest.raises(DataError, match="module:attr"):
        bad["x"]


def test_conformal_methods_registry_matches_the_cli_choices():
    assert list(METHODS) == list(CONFORMAL_METHODS)
    for name in METHODS:
        assert METHODS[name].method == name


def test_a_plugin_search_space_registers_through_its_entry_point(tmp_path):
    """The docs/DEVELOPING.md example: one module, one entry point, nothing edited in latlab."""
    (tmp_path / "widthplug.py").write_text(_doc_example("### A search space: one module"))
    info = tmp_path / "widthplug-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: widthplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[latlab.spaces]\nwidth = widthplug:SPACE\n")
    got = _python(
        """
        import json
        from latlab.datasets.references import resolve
        from latlab.datasets.spaces import SPACES, sample
        g = resolve("width:8")
        refs = sample("width", 5, seed=0)
        print(json.dumps({"macs": g.totals.macs, "listed": "width" in SPACES,
                          "refs": refs, "family": g.family}))
        """,
        extra_path=tmp_path,
    )
    assert got["macs"] == 32 * 8 + 8 * 10 and got["listed"] and got["family"] == "width"
    assert len(set(got["refs"])) == 5 and all(r.startswith("width:") for r in got["refs"])


def test_the_documented_predictor_example_trains_tunes_and_round_trips(tmp_path):
    (tmp_path / "macsfit.py").write_text(_doc_example("### A predictor: one module"))
    info = tmp_path / "macsfit-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: macsfit\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[latlab.predictors]\nmacs-fit = macsfit:MacsFitPredictor\n"
    )
    got = _python(
        f"""
        import json
        import numpy as np
        from latlab.datasets.references import resolve
        from latlab.datasets.spaces import sample
        from latlab.predictors import load_predictor, make_predictor
        from latlab.training.tuning import get_search_space
        refs = sample("fcnn", 30, seed=0)
        y = np.array([0.01 + 1e-6 * resolve(r).totals.macs for r in refs])
        p = make_predictor("macs-fit").fit(refs, y)
        p.save({str(tmp_path / "saved")!r})
        again = load_predictor({str(tmp_path / "saved")!r}).predict(refs)
        mape = float(np.mean(np.abs(p.predict(refs) - y) / y))
        print(json.dumps({{"mape": mape, "same": bool(np.array_equal(again, p.predict(refs))),
                          "offset": get_search_space("macs-fit").params["offset"].default}}))
        """,
        extra_path=tmp_path,
    )
    assert got["same"] and got["offset"] == 1000.0
    assert got["mape"] < 0.05  # a smooth MACs law: the two-parameter fit is close
