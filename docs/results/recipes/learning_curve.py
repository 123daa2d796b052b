"""The learning curve of issue 8: test macro-F1 against the number of training images.

    python docs/results/recipes/learning_curve.py RUN_DIR ... --out learning_curve.png

Each RUN_DIR is a finished run of one config with another ``data.train_fraction`` (validation
and test unchanged). Prints a table (training images from the run's splits, validation and test
macro-F1 with the test's 95% bootstrap interval) and a least-squares line of test macro-F1 on
log2(training images): its slope is the gain per doubling of the data, and where it crosses a
target is a rough guess (an extrapolation of few points, not a promise) of how many images a
from-scratch model of this recipe would need. Nothing is typed by hand.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from collect import _val_macro_f1  # noqa: E402


def point(run: Path) -> dict:
    try:
        splits = json.loads((run / "splits" / "splits.json").read_text())
        test = json.loads((run / "test_metrics.json").read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"error: {run} is not a finished hemacnn run folder ({exc}); give the "
                         "run folders of one config at several data.train_fraction values"
                         ) from None
    return {"run": run.name, "train_images": sum(splits["counts"]["train"].values()),
            "all_images": sum(sum(c.values()) for c in splits["counts"].values()),
            # rounded as collect.py rounds, so both tables print the same figures
            "val_macro_f1": round(_val_macro_f1(run)[0], 4),
            "test_macro_f1": round(test["macro_f1"], 4),
            "ci": (test.get("headline_ci") or {}).get("macro_f1")}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True, help="the PNG to write")
    ap.add_argument("--target", type=float, default=0.80)
    args = ap.parse_args(argv)
    pts = sorted((point(r) for r in args.runs), key=lambda p: p["train_images"])
    if len({p["train_images"] for p in pts}) < 2:
        raise SystemExit("error: a learning curve needs runs with at least two different "
                         "numbers of training images (data.train_fraction)")
    print("| run | training images | val macro-F1 | test macro-F1 [95% CI] |")
    print("|---|---|---|---|")
    for p in pts:
        ci = f" [{p['ci'][0]:.3f}, {p['ci'][1]:.3f}]" if p["ci"] else ""
        print(f"| {p['run']} | {p['train_images']} | {p['val_macro_f1']:.3f} | "
              f"{p['test_macro_f1']:.3f}{ci} |")
    x = np.log2([p["train_images"] for p in pts])
    fits = {}
    for key in ("val_macro_f1", "test_macro_f1"):
        slope, icept = np.polyfit(x, [p[key] for p in pts], 1)
        need = 2 ** ((args.target - icept) / slope) if slope > 0 else math.inf
        fits[key] = (slope, icept)
        print(f"\n{key}: {slope:+.3f} per doubling of the training images; the line reaches "
              f"{args.target:.2f} at about {need:,.0f} training images"
              + (f" ({need / pts[-1]['train_images']:.0f}x the largest run)"
                 if math.isfinite(need) else ""))

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    n = np.array([p["train_images"] for p in pts])
    test = np.array([p["test_macro_f1"] for p in pts])
    lo = np.array([p["ci"][0] if p["ci"] else t for p, t in zip(pts, test, strict=True)])
    hi = np.array([p["ci"][1] if p["ci"] else t for p, t in zip(pts, test, strict=True)])
    ax.errorbar(n, test, yerr=[test - lo, hi - test], fmt="o", capsize=4, color="C0",
                label="test macro-F1 (95% bootstrap CI)")
    ax.plot(n, [p["val_macro_f1"] for p in pts], "s", color="C1", label="validation macro-F1")
    grid = np.linspace(x.min(), x.max() + 2, 50)
    for key, colour in (("test_macro_f1", "C0"), ("val_macro_f1", "C1")):
        slope, icept = fits[key]
        ax.plot(2 ** grid, icept + slope * grid, "--", color=colour, lw=1)
    ax.axhline(args.target, color="grey", lw=1, ls=":")
    everything = max(p["all_images"] for p in pts)  # train + validation + test
    ax.axvline(everything, color="grey", lw=1, ls="-.")
    ax.text(everything * 0.96, 0.62, f"all {everything:,} labelled images\nof these classes here",
            color="grey", fontsize=8, ha="right")
    ax.text(2 ** grid[0], args.target + 0.005, f"target {args.target:.2f}", color="grey")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("training images (log scale; dashed: least-squares line, extended 4x)")
    ax.set_ylabel("macro-F1")
    ax.set_title("Learning curve: the same recipe on nested shares of the training split")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = args.out.with_name(f".{args.out.name}.tmp.png")
    fig.savefig(tmp)
    tmp.replace(args.out)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
