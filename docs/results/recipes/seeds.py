"""One recipe over several seeds: test macro-F1 mean and 95% interval, per class, with and
without TTA, seconds per epoch, learning curves, and an ensemble of the seeds beside them.

    python docs/results/recipes/seeds.py RUN_DIR ... [--ensemble ENS_DIR] [--png curves.png]
        [--json out.json] [--no-mean]

Every figure is read from the run folders (no figure typed by hand):
- with TTA: the end-of-training test (test_metrics.json, when the run's recipe had
  test_tta) or ``hemacnn evaluate RUN --tta`` (evaluation_test_tta.json);
- without TTA: ``hemacnn evaluate RUN`` (evaluation_test.json);
- validation with TTA, the figure recipes and ensembles are chosen by: ``hemacnn evaluate RUN
  --split val --tta`` (evaluation_val_tta.json; score.sh runs all three);
- validation macro-F1 at the selected checkpoint's epoch (lowest validation loss), as
  collect.py reads it;
- seconds per epoch: the median of metrics.csv's time_s (the first epoch included in the
  total only; it also builds the image cache);
- the ensemble: ``hemacnn evaluate ENS --tta`` and ``hemacnn evaluate ENS`` on the members'
  common test split (evaluation_test_tta.json, evaluation_test.json).

The interval over seeds is Student's t with n - 1 degrees of freedom on the seeds' macro-F1s;
with 3 seeds it is wide (t = 4.30), which is the honest width of 3 seeds.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path

import yaml
from scipy import stats

sys.path.insert(0, str(Path(__file__).parent))
from collect import _val_macro_f1  # noqa: E402


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _tests(run: Path) -> tuple[dict | None, dict | None]:
    """(with TTA, without TTA) test metrics of a run or ensemble folder."""
    end = _load(run / "test_metrics.json")
    tta = end if end is not None and end.get("tta") else _load(run / "evaluation_test_tta.json")
    plain = _load(run / "evaluation_test.json")
    if plain is None and end is not None and not end.get("tta"):
        plain = end
    return tta, plain


def _epochs(run: Path) -> list[dict]:
    with (run / "metrics.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def _precision(run: Path) -> str:
    """What the run trained in, from its log line ("Using bfloat16 Automatic Mixed Precision")
    in the launcher's log beside the folder, else the config's setting."""
    log = run.parent / f"{run.name}.log"
    if log.is_file() and "Using bfloat16 Automatic Mixed Precision" in log.read_text():
        return "bf16 autocast"
    if log.is_file():
        return "fp32"
    return str(yaml.safe_load((run / "config.yaml").read_text())["trainer"]["precision"])


def _mean_ci(values: list[float]) -> tuple[float, float, float]:
    m = statistics.fmean(values)
    if len(values) < 2:
        return m, float("nan"), float("nan")
    half = stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5
    return m, m - half, m + half


def _f1s(metrics: dict) -> dict:
    return {c: v["f1"] for c, v in metrics["per_class"].items()}


def summarise(runs: list[Path], ensemble: Path | None) -> dict:
    seeds, recipes = [], set()
    for run in runs:
        if not (run / "config.yaml").is_file():
            sys.exit(f"error: {run} is not a run folder (no config.yaml); give folders that "
                     "hemacnn train wrote")
        tta, plain = _tests(run)
        if tta is None or plain is None:
            sys.exit(f"error: {run} lacks a test evaluation with and without TTA; run "
                     f"`hemacnn evaluate {run}` and `hemacnn evaluate {run} --tta` first")
        epochs = _epochs(run)
        val_f1, best_epoch = _val_macro_f1(run)
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        # The recipe: the whole config but the seeds and where the images lay (seed 0's
        # split_seed null and seed N's split_seed 0 are the same split).
        data = {**cfg["data"], "root": None, "split_seed": None}
        recipes.add(json.dumps({**cfg, "seed": None, "data": data}, sort_keys=True))
        val_tta = _load(run / "evaluation_val_tta.json")
        seeds.append({
            "run": run.name, "model": cfg["model"]["name"].removeprefix("timm/"),
            "px": cfg["data"]["image_size"], "seed": cfg["seed"],
            "precision": _precision(run),
            "val_macro_f1": val_f1, "best_epoch": best_epoch,
            "val_macro_f1_tta": val_tta["macro_f1"] if val_tta else None,
            "epochs": len(epochs),
            "s_per_epoch_median": statistics.median(float(e["time_s"]) for e in epochs),
            "train_s": sum(float(e["time_s"]) for e in epochs),
            "test_macro_f1_tta": tta["macro_f1"], "test_macro_f1": plain["macro_f1"],
            "test_macro_f1_tta_ci": tta["headline_ci"]["macro_f1"],
            "per_class_f1_tta": _f1s(tta),
            "per_class_f1": _f1s(plain),
        })
    # "seeds" when the runs share everything but the seed, "runs" when they mix recipes.
    out = {"seeds": seeds, "n_seeds": len(seeds), "unit": "seeds" if len(recipes) == 1 else "runs"}
    for key in ("test_macro_f1_tta", "test_macro_f1", "val_macro_f1"):
        out[key] = dict(zip(("mean", "ci_low", "ci_high"),
                            _mean_ci([s[key] for s in seeds]), strict=True))
    classes = list(seeds[0]["per_class_f1_tta"])
    out["per_class"] = {c: {k: _mean_ci([s[k][c] for s in seeds])[0]
                            for k in ("per_class_f1_tta", "per_class_f1")} for c in classes}
    if ensemble is not None:
        tta, plain = _tests(ensemble)
        if tta is None or plain is None or not (ensemble / "evaluation_val_tta.json").is_file():
            sys.exit(f"error: {ensemble} lacks a test evaluation with and without TTA or a "
                     f"validation one with TTA; run docs/results/recipes/score.sh ensemble "
                     f"{ensemble} RUN...")
        out["ensemble"] = {
            "folder": ensemble.name, "members": [s["run"] for s in seeds],
            "val_macro_f1_tta": _load(ensemble / "evaluation_val_tta.json")["macro_f1"],
            "test_macro_f1_tta": tta["macro_f1"], "test_macro_f1_tta_ci":
            tta["headline_ci"]["macro_f1"], "test_macro_f1": plain["macro_f1"],
            "test_macro_f1_ci": plain["headline_ci"]["macro_f1"],
            "per_class_f1_tta": _f1s(tta),
            "per_class_f1": _f1s(plain),
        }
    return out


def table(s: dict, mean: bool = True) -> str:
    lines = ["| run | backbone | px | seed | precision | val macro-F1 | val macro-F1 (TTA) | "
             "test macro-F1 (TTA) [95% CI] | test macro-F1 (no TTA) | epochs | s/epoch (median) "
             "| training s |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in s["seeds"]:
        lo, hi = r["test_macro_f1_tta_ci"]
        vt = "" if r["val_macro_f1_tta"] is None else f"{r['val_macro_f1_tta']:.3f}"
        lines.append(f"| {r['run']} | {r['model']} | {r['px']} | {r['seed']} | {r['precision']} "
                     f"| {r['val_macro_f1']:.3f} | {vt} | {r['test_macro_f1_tta']:.3f} "
                     f"[{lo:.3f}, {hi:.3f}] | {r['test_macro_f1']:.3f} | {r['epochs']} | "
                     f"{r['s_per_epoch_median']:.0f} | {r['train_s']:.0f} |")
    if not mean:
        return "\n".join(lines)
    t, p, unit = s["test_macro_f1_tta"], s["test_macro_f1"], s.get("unit", "seeds")
    lines.append(f"| **mean of {s['n_seeds']} {unit}** [95% t-interval] | | | | | "
                 f"{s['val_macro_f1']['mean']:.3f} | | **{t['mean']:.3f}** [{t['ci_low']:.3f}, "
                 f"{t['ci_high']:.3f}] | {p['mean']:.3f} [{p['ci_low']:.3f}, {p['ci_high']:.3f}]"
                 " | | | |")
    if "ensemble" in s:
        e = s["ensemble"]
        lo, hi = e["test_macro_f1_tta_ci"]
        lo2, hi2 = e["test_macro_f1_ci"]
        lines.append(f"| **ensemble of the {len(e['members'])}** ({e['folder']}) [bootstrap] | "
                     f"| | | | | {e['val_macro_f1_tta']:.3f} | "
                     f"**{e['test_macro_f1_tta']:.3f}** [{lo:.3f}, {hi:.3f}] | "
                     f"{e['test_macro_f1']:.3f} [{lo2:.3f}, {hi2:.3f}] | | | |")
    classes = list(s["per_class"])
    head = "| per-class test F1 | " + " | ".join(classes) + " |"
    lines += ["", head, "|---" * (len(classes) + 1) + "|"]
    for key, label in (("per_class_f1_tta", f"mean of {unit}, TTA"),
                       ("per_class_f1", f"mean of {unit}, no TTA")):
        lines.append(f"| {label} | " + " | ".join(f"{s['per_class'][c][key]:.3f}"
                                                  for c in classes) + " |")
    if "ensemble" in s:
        for key, label in (("per_class_f1_tta", "ensemble, TTA"),
                           ("per_class_f1", "ensemble, no TTA")):
            lines.append(f"| {label} | " + " | ".join(f"{s['ensemble'][key][c]:.3f}"
                                                      for c in classes) + " |")
    return "\n".join(lines)


def curves(runs: list[Path], png: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for i, run in enumerate(runs):
        rows = _epochs(run)
        ep = [int(r["epoch"]) for r in rows]
        colour = f"C{i}"
        ax_loss.plot(ep, [float(r["train_loss"]) for r in rows], "--", color=colour,
                     label=f"{run.name} train")
        ax_loss.plot(ep, [float(r["val_loss"]) for r in rows], "-", color=colour,
                     label=f"{run.name} validation")
        ax_acc.plot(ep, [float(r["train_acc"]) for r in rows], "--", color=colour)
        ax_acc.plot(ep, [float(r["val_acc"]) for r in rows], "-", color=colour)
    ax_loss.set(xlabel="epoch", ylabel="loss (label-smoothed cross-entropy)", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy (dashed: training)")
    ax_loss.legend(fontsize=7)
    fig.tight_layout()
    tmp = png.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(png)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--ensemble", type=Path)
    p.add_argument("--png", type=Path, help="write the learning curves here")
    p.add_argument("--json", type=Path, help="write the summary here")
    p.add_argument("--no-mean", action="store_true",
                   help="runs of different recipes (the search): no mean or interval row")
    args = p.parse_args(argv)
    s = summarise(args.runs, args.ensemble)
    print(table(s, mean=not args.no_mean))
    if args.png:
        curves(args.runs, args.png)
        print(f"\nwrote {args.png}")
    if args.json:
        args.json.write_text(json.dumps(s, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
