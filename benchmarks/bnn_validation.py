"""Validation of the LXNOROP model against real bit-packed measurements on this machine.

A thin caller of :mod:`latlab.experiments.bnn` (the logic lives there; ``latlab experiment
run bnn [--quick]`` runs the same with a full report, figure and MLflow logging). This script
keeps the knobs of the measurement (``--rounds``, ``--reduce``, ``--clock``) and writes
``bnn_validation.json``, ``bnn_validation.md`` and the fitted ``host-calibrated.json`` into
``--out``.

    python benchmarks/bnn_validation.py --quick      # ~40 s: quick suite, 10 networks
    python benchmarks/bnn_validation.py              # ~3 min: full suite, 14 networks
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

try:
    import latlab  # noqa: F401
except ImportError:  # running from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main(argv: list[str] | None = None) -> int:
    from latlab.experiments.bnn import forward_markdown, validate
    from latlab.predictors.bnn import write_target

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="quick suite, 10 networks, 5 rounds")
    ap.add_argument("--out", type=Path, default=Path("reports/bnn"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=None, help="randomised passes (default 5/7)")
    ap.add_argument("--reduce", default="min", choices=("min", "median"),
                    help="per network: the least disturbed pass (min) or the median")  # fmt: skip
    ap.add_argument("--clock", default="auto", choices=("auto", "wall", "thread"),
                    help="auto: the thread's CPU clock with one thread, else wall")  # fmt: skip
    args = ap.parse_args(argv)

    def progress(i: int, n: int, what: str) -> None:
        print(f"\r  [{i}/{n}] {what[:60]:60s}", end="", file=sys.stderr, flush=True)

    doc, target = validate(quick=args.quick, threads=args.threads, rounds=args.rounds,
                           reduce=args.reduce, clock=args.clock, progress=progress)  # fmt: skip
    print(file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    write_target(target, args.out / "host-calibrated.json")
    (args.out / "bnn_validation.json").write_text(json.dumps(doc, indent=1, default=float))
    md = forward_markdown(doc)
    (args.out / "bnn_validation.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
