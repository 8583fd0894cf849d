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
    (tmp_path / "widthplug.py").write_text(
        _doc_example("### A search space (and its reference scheme)")
    )
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
        from latlab.training.tuning import get_param_space
        refs = sample("fcnn", 30, seed=0)
        y = np.array([0.01 + 1e-6 * resolve(r).totals.macs for r in refs])
        p = make_predictor("macs-fit").fit(refs, y)
        p.save({str(tmp_path / "saved")!r})
        again = load_predictor({str(tmp_path / "saved")!r}).predict(refs)
        mape = float(np.mean(np.abs(p.predict(refs) - y) / y))
        print(json.dumps({{"mape": mape, "same": bool(np.array_equal(again, p.predict(refs))),
                          "offset": get_param_space("macs-fit").params["offset"].default}}))
        """,
        extra_path=tmp_path,
    )
    assert got["same"] and got["offset"] == 1000.0
    assert got["mape"] < 0.05  # a smooth MACs law: the two-parameter fit is close


def test_listing_schemes_spaces_backends_and_encoders_imports_none_of_their_modules():
    got = _python(
        """
        import json, sys
        import latlab.datasets
        from latlab.datasets.measure import BACKENDS
        from latlab.datasets.references import SCHEMES
        from latlab.datasets.spaces import SPACES
        from latlab.encoders.graph import GRAPH_ENCODERS
        from latlab.encoders.vector import VECTOR_ENCODERS
        names = {"schemes": sorted(SCHEMES), "spaces": sorted(SPACES),
                 "backends": sorted(BACKENDS), "vector": sorted(VECTOR_ENCODERS),
                 "graph": sorted(GRAPH_ENCODERS)}
        owners = ("spaces.nb201", "spaces.fbnet", "spaces.ofa", "spaces.fcnn", "spaces.cnn",
                  "spaces.bnn", "spaces.blocks", "datasets.zoo", "datasets.onnx_files",
                  "bench.kernels", "measure.onnxruntime_backend", "measure.torch_backend",
                  "measure.bitpacked")
        loaded = sorted(m for m in sys.modules if m.startswith("latlab.")
                        and any(m.endswith(o) for o in owners))
        heavy = [m for m in ("torch", "onnxruntime", "onnx") if m in sys.modules]
        print(json.dumps({**names, "loaded": loaded, "heavy": heavy}))
        """
    )
    from latlab.datasets.measure.backends import BUILTIN_BACKENDS
    from latlab.datasets.references import BUILTIN_SCHEMES
    from latlab.datasets.spaces.base import BUILTIN_SPACES

    assert got["loaded"] == [] and got["heavy"] == []
    assert got["schemes"] == sorted(BUILTIN_SCHEMES) and len(got["schemes"]) == 11
    assert got["spaces"] == sorted(BUILTIN_SPACES) and len(got["spaces"]) == 9
    assert got["backends"] == sorted(BUILTIN_BACKENDS) and len(got["backends"]) == 5
    # The spaces' own encoders are not known before their space loads.
    assert got["vector"] == [
        "nb201-counts", "nb201-edge-counts", "nb201-live-counts", "nb201-onehot", "summary",
        "summary-linear", "widths",
    ]  # fmt: skip
    assert got["graph"] == ["generic", "nb201-brp", "nb201-cell"]


def test_every_builtin_scheme_space_and_backend_loads_to_what_its_name_says():
    from latlab.datasets.measure.backends import BACKENDS, get_backend
    from latlab.datasets.references import SCHEMES, Scheme, parse_reference
    from latlab.datasets.spaces import SPACES, SearchSpace, load_all
    from latlab.encoders.graph import GRAPH_ENCODERS
    from latlab.encoders.vector import VECTOR_ENCODERS

    for name in SCHEMES:
        assert isinstance(SCHEMES[name], Scheme) and SCHEMES[name].name == name
    for name in SPACES:
        assert isinstance(SPACES[name], SearchSpace) and SPACES[name].name == name
        # What a space samples parses through the scheme registry.
        for ref in SPACES[name].sample(2, seed=0):
            assert parse_reference(ref).scheme in SCHEMES, (name, ref)
    for name in BACKENDS:
        assert callable(BACKENDS[name])
    for name in ("onnxruntime", "bitpacked"):  # the CUDA ones need a GPU to instantiate
        assert get_backend(name).name == name
    load_all()
    for space in SPACES.values():
        for enc in [*(space.vector_features or "").split("+"), space.onehot, space.counts]:
            assert not enc or enc in VECTOR_ENCODERS, (space.name, enc)
        assert space.graph is None or space.graph in GRAPH_ENCODERS, space.name
    assert {"fbnet-onehot", "fbnet-counts", "ofa-onehot", "ofa-counts"} <= set(VECTOR_ENCODERS)


def test_the_documented_backend_example_runs_as_a_plugin(tmp_path):
    """The docs/DEVELOPING.md backend: one module, one entry point; a real inference."""
    (tmp_path / "ortnoopt.py").write_text(_doc_example("### A measurement backend: one module"))
    info = tmp_path / "ortnoopt-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ortnoopt\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[latlab.backends]\nonnxruntime-noopt = ortnoopt:OrtNoOptBackend\n"
        "torch = ortnoopt:OrtNoOptBackend\n"  # a plug-in cannot replace a built-in
    )
    got = _python(
        """
        import json
        from latlab.datasets.measure import BACKENDS, get_backend
        backend = get_backend("onnxruntime-noopt")
        run = backend.prepare("fcnn:16-8-4", 1, 1)
        run()
        print(json.dumps({"name": backend.name, "details": run.details,
                          "listed": "onnxruntime-noopt" in sorted(BACKENDS),
                          "torch": BACKENDS["torch"].__module__}))
        """,
        extra_path=tmp_path,
    )
    assert got["name"] == "onnxruntime-noopt" and got["listed"]
    assert got["details"]["graph_optimization"] == "disabled"
    assert got["torch"] == "latlab.datasets.measure.torch_backend"


def test_a_plugin_scheme_registers_through_its_entry_point(tmp_path):
    (tmp_path / "sqplug.py").write_text(
        textwrap.dedent(
            """
            from latlab.datasets.references import Scheme
            from latlab.encoders.builder import NetBuilder
            from latlab.errors import NetworkReferenceError

            def _resolve(body, opts):  # "sq:N" = one N->N Gemm
                b = NetBuilder(f"sq:{body}", (opts.batch, int(body)), meta={"family": "sq"})
                b.gemm(b.input, int(body))
                return b.build()

            def _validate(body):
                if not body.isdigit():
                    raise NetworkReferenceError(f"sq:{body}: the body must be a width")

            SCHEME = Scheme("sq", _resolve, validate=_validate)
            """
        )
    )
    info = tmp_path / "sqplug-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: sqplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[latlab.schemes]\nsq = sqplug:SCHEME\n")
    got = _python(
        """
        import json
        from latlab.datasets.references import invalid_references, resolve
        g = resolve("sq:12")
        bad = invalid_references(["sq:x", "nope:1"])
        print(json.dumps({"macs": g.totals.macs, "family": g.family, "bad": [b[0] for b in bad],
                          "msg": bad[1][2]}))
        """,
        extra_path=tmp_path,
    )
    assert got["macs"] == 12 * 12 and got["family"] == "sq" and got["bad"] == [0, 1]
    assert "unknown network reference scheme 'nope'" in got["msg"] and "sq" in got["msg"]


def test_zoo_op_rule_and_encoder_class_tables_list_names_without_imports():
    got = _python(
        """
        import json, sys
        from latlab.datasets import zoo
        from latlab.encoders.base import ENCODER_CLASSES
        from latlab.encoders.ops import RULES
        names = {"zoo": zoo.names(), "encoders": sorted(ENCODER_CLASSES),
                 "binary_rule": "BinaryGemm" in RULES}
        loaded = sorted(m for m in sys.modules if m.startswith(("latlab.datasets.zoo.",
                        "latlab.encoders.binary", "latlab.encoders.vector",
                        "latlab.encoders.graph", "latlab.encoders.choices")))
        kind = RULES["BinaryConv"].kind  # loads the binary module now
        print(json.dumps({**names, "loaded": loaded, "kind": kind,
                          "binary": "latlab.encoders.binary" in sys.modules}))
        """
    )
    from latlab.datasets.zoo import BUILTIN_MODELS
    from latlab.encoders.base import BUILTIN_ENCODER_CLASSES

    assert got["loaded"] == ["latlab.datasets.zoo.common"]
    assert got["zoo"] == sorted(BUILTIN_MODELS) and len(got["zoo"]) == 38
    assert got["encoders"] == sorted(BUILTIN_ENCODER_CLASSES) and len(got["encoders"]) == 10
    assert got["binary_rule"] and got["kind"] == "binconv" and got["binary"]


def test_every_builtin_zoo_model_and_encoder_class_loads_to_what_its_name_says():
    import importlib
    import pkgutil

    import latlab.encoders
    from latlab.datasets import zoo
    from latlab.encoders.base import ENCODER_CLASSES, EncoderStateMixin

    for name in zoo.names():
        assert zoo.get_model(name).name == name
    for name in ENCODER_CLASSES:
        assert ENCODER_CLASSES[name].__name__ == name
    # Every encoder class latlab defines can be restored from a state (none left out).
    for mod in pkgutil.iter_modules(latlab.encoders.__path__, "latlab.encoders."):
        importlib.import_module(mod.name)
    subclasses, todo = set(), list(EncoderStateMixin.__subclasses__())
    while todo:
        cls = todo.pop()
        subclasses.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    assert subclasses == set(ENCODER_CLASSES)


def test_an_encoder_state_cannot_name_a_class_outside_the_table():
    from latlab.encoders.base import encoder_from_state
    from latlab.errors import FeatureError

    with pytest.raises(FeatureError, match="unknown encoder 'Popen' in saved state"):
        encoder_from_state({"encoder": "Popen", "params": {"args": ["true"]}})
    enc = encoder_from_state({"encoder": "SummaryEncoder", "version": 1, "params": {}})
    assert type(enc).__name__ == "SummaryEncoder"


def test_no_module_registers_into_a_registry_it_does_not_define():
    """Registration by import side effect stays out: a built-in is one line of its registry's
    table. A module may fill only a registry it defines itself (the op tables of ``ops``,
    ``onnx_export``, ``torch_export``); no built-in class registers itself by decorator."""
    import ast

    bad = []
    for path in sorted((SRC / "latlab").rglob("*.py")):
        tree = ast.parse(path.read_text())
        own = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        for node in tree.body:
            if isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                own |= {t.id for t in targets if isinstance(t, ast.Name)}
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.ClassDef):
                for d in node.decorator_list:
                    name = d.id if isinstance(d, ast.Name) else getattr(d, "attr", "")
                    if name.startswith("register"):
                        bad.append(f"{path.name}:{d.lineno} @{name}")
        for stmt in tree.body:  # module level only: what importing the module does
            for node in (
                ast.walk(stmt) if not isinstance(stmt, ast.FunctionDef | ast.ClassDef) else ()
            ):
                if not isinstance(node, ast.Call):
                    continue
                f = node.func
                if isinstance(f, ast.Name) and f.id.startswith("register") and f.id not in own:
                    bad.append(f"{path.name}:{node.lineno} {f.id}()")
                if (
                    isinstance(f, ast.Attribute)
                    and f.attr == "register"
                    and isinstance(f.value, ast.Name)
                    and f.value.id not in own
                ):
                    bad.append(f"{path.name}:{node.lineno} {f.value.id}.register()")
    assert bad == []
