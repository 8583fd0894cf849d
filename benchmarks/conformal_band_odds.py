"""Can every device's mean coverage lie in a band, when each interval is calibrated on n points?

A conformal interval calibrated on n exchangeable points (split conformal; jackknife+ and CV+
with a stable model behave alike) covers, for a given draw of those n points, a fraction of
new points that is itself random: Beta(r, n + 1 - r) with r = ceil(level * (n + 1)) (Vovk
2012; Angelopoulos & Bates 2021, sec. 3). With k = 10 few-shot networks at 90 % that is
Beta(10, 1): mean 90.9 %, standard deviation 8.3 %. The transfer experiments average a device's
coverage over a few seeds (draws of the k networks) and ask every device's mean to lie in a
band (issue 15: 87-95 %). This script gives the chance that an *exactly valid* method meets
that, per device and for all devices at once -- the best any k-shot interval method can do,
whatever its model:

    python benchmarks/conformal_band_odds.py --n 10 --level 0.9 --seeds 5 --devices 13,6

Monte Carlo with a fixed seed (``--draws`` experiments); prints a Markdown table.
"""

from __future__ import annotations

import argparse
import math

import numpy as np


def band_odds(
    n: int, level: float, seeds: int, low: float, high: float, draws: int, rng_seed: int = 0
) -> dict[str, float]:
    """Chance that the mean coverage over ``seeds`` calibrations of ``n`` points lies in
    ``[low, high]``, with the mean and spread of that mean."""
    r = math.ceil(level * (n + 1))
    if r > n:
        raise ValueError(f"n = {n} points cannot give a finite {level:.0%} interval")
    rng = np.random.default_rng(rng_seed)
    mean_cov = rng.beta(r, n + 1 - r, size=(draws, seeds)).mean(axis=1)
    return {
        "rank": r,
        "mean": float(mean_cov.mean()),
        "sd": float(mean_cov.std()),
        "p_device": float(((mean_cov >= low) & (mean_cov <= high)).mean()),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--n", default="10", help="comma-separated calibration sizes (k networks)")
    ap.add_argument("--level", type=float, default=0.9)
    ap.add_argument("--seeds", type=int, default=5, help="calibrations averaged per device")
    ap.add_argument("--devices", default="13,6", help="comma-separated device counts")
    ap.add_argument("--band", default="0.87,0.95", help="low,high of the target band")
    ap.add_argument("--draws", type=int, default=200_000)
    args = ap.parse_args(argv)
    try:
        sizes = [int(v) for v in args.n.split(",")]
        devices = [int(v) for v in args.devices.split(",")]
        low, high = (float(v) for v in args.band.split(","))
    except ValueError:
        ap.error("--n, --devices: comma-separated integers; --band: two numbers low,high")
    if not 0 < args.level < 1 or not low < high or args.seeds < 1 or min(sizes) < 1:
        ap.error("--level in (0, 1), --band low < high, --seeds and --n at least 1")
    rows = []
    for n in sizes:  # every size checked before anything is printed
        try:
            rows.append((n, band_odds(n, args.level, args.seeds, low, high, args.draws)))
        except ValueError as exc:
            ap.error(str(exc))
    head = " | ".join(f"P(all {d} in band)" for d in devices)
    print(f"| n | rank | mean coverage | sd of a {args.seeds}-seed mean | "
          f"P(one device in {low:.0%}-{high:.0%}) | {head} |")  # fmt: skip
    print("|---" * (5 + len(devices)) + "|")
    for n, o in rows:
        alls = " | ".join(f"{o['p_device'] ** d:.3f}" for d in devices)
        print(f"| {n} | {o['rank']} | {o['mean']:.3f} | {o['sd']:.3f} | {o['p_device']:.3f} | "
              f"{alls} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
