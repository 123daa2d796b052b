"""The learning curve's table and figure from the committed points (`run.py`'s JSON files).

    python docs/results/adaptation/make_table.py docs/results/adaptation/points

writes the table into README.md beside the folder (between its `<!-- table -->` and
`<!-- /table -->` lines), the recipes tried (tries/*.json) between `<!-- tries -->` and
`<!-- /tries -->`, and learning_curve.png.

One row per k: mapped macro-F1 on the held-back PBC cells and the in-domain test macro-F1 after
adaptation, each as the mean over the seeds (draws of the k cells) with a 95% t-interval of that
mean and the seeds' own range; the seconds of `hemacnn adapt` (training only, and the whole
command with its in-domain test). k = 0 is the parent itself (one point: no draw).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from scipy import stats


def mean_ci(values: list[float]) -> tuple[float, float, float]:
    """Mean and the 95% t-interval of the mean (the mean alone for one value)."""
    v = np.asarray(values, dtype=float)
    m = float(v.mean())
    if len(v) < 2:
        return m, m, m
    half = float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
    return m, m - half, m + half


def cell(values: list[float]) -> str:
    m, lo, hi = mean_ci(values)
    if len(values) < 2:
        return f"{m:.3f}"
    return f"{m:.3f} [{lo:.3f}, {hi:.3f}] ({min(values):.3f}–{max(values):.3f})"


def rows(points: list[dict]) -> list[dict]:
    out = []
    parent = next(p for p in points if p["k"] == 0)
    out.append({"k": "0 (parent)", "n": 1, "pbc": [parent["plain"]["pbc"]["macro_f1"]],
                "in": [parent["in_domain"]["macro_f1"]], "train_s": [], "wall_s": [],
                "held": parent["plain"]["pbc"]["n"]})
    out.append({"k": "0 + --adapt-bn", "n": 1, "pbc": [parent["adaptbn"]["pbc"]["macro_f1"]],
                "in": [], "train_s": [], "wall_s": [], "held": parent["adaptbn"]["pbc"]["n"]})
    for steps, k in sorted({(steps_of(p), p["k"]) for p in points if p["k"] > 0},
                           key=lambda sk: (-sk[0], sk[1])):
        ps = [p for p in points if p["k"] == k and steps_of(p) == steps]
        out.append({"k": str(k), "steps": steps, "n": len(ps),
                    "pbc": [p["pbc"]["macro_f1"] for p in ps],
                    "in": [p["in_domain"]["macro_f1"] for p in ps],
                    "train_s": [p["adapt"]["train_s"] for p in ps],
                    "wall_s": [p["adapt"]["wall_s"] for p in ps], "held": ps[0]["pbc"]["n"]})
    return out


def steps_of(point: dict) -> int:
    """The adaptation's steps, as its card recorded them."""
    return int(point["adapt"]["adaptation"]["recipe"]["steps"])


def table(points: list[dict]) -> str:
    parent_in = next(p for p in points if p["k"] == 0)["in_domain"]["macro_f1"]
    lines = ["| labelled PBC cells per class | steps | seeds | held-back PBC cells | PBC mapped "
             "macro-F1: mean [95% CI of the mean] (seeds' range) | PBC − parent's in-domain | "
             "in-domain macro-F1 after adaptation | in-domain change | seconds: training (whole "
             "adapt command) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows(points):
        pbc = np.mean(r["pbc"])
        ind = f"{cell(r['in'])}" if r["in"] else "–"
        change = f"{np.mean(r['in']) - parent_in:+.3f}" if r["in"] and r["k"] != "0 (parent)" \
            else ""
        secs = (f"{np.mean(r['train_s']):.0f} ({np.mean(r['wall_s']):.0f})"
                if r["train_s"] else "–")
        lines.append(f"| {r['k']} | {r.get('steps', '–')} | {r['n']} | {r['held']} | "
                     f"{cell(r['pbc'])} | "
                     f"{pbc - parent_in:+.3f} | {ind} | {change} | {secs} |")
    return "\n".join(lines)


def ci_text(f: dict) -> str:
    ci = f.get("macro_f1_ci")
    return f"{f['macro_f1']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def tries_table(points: list[dict], curve: list[dict]) -> str:
    """One row per recipe tried: its options and both figures with their bootstrap intervals
    (one draw each: the intervals are over cells, not over draws), beside the 60-step curve's
    point of the same draw (k and seed; the recipe the tries varied) and the difference."""
    default = {(p["k"], p["seed"]): p for p in curve if p["k"] > 0 and steps_of(p) == 60}
    lines = ["| try | k | seed | `hemacnn adapt` options | PBC mapped macro-F1 [95% bootstrap "
             "CI] | in-domain macro-F1 [95% bootstrap CI] | 60 steps, replay 0.5, BatchNorm kept "
             "(the 60-step curve) on this draw: PBC, in-domain | try − that: PBC, in-domain | "
             "seconds of training |",
             "|---|---|---|---|---|---|---|---|---|"]
    for p in sorted(points, key=lambda p: (p["k"], p["started"])):
        options = " ".join(p["options"]) or "(defaults)"
        d = default.get((p["k"], p["seed"]))
        same = (f"{d['pbc']['macro_f1']:.3f}, {d['in_domain']['macro_f1']:.3f}" if d else "–")
        diff = (f"{p['pbc']['macro_f1'] - d['pbc']['macro_f1']:+.3f}, "
                f"{p['in_domain']['macro_f1'] - d['in_domain']['macro_f1']:+.3f}" if d else "–")
        lines.append(f"| {p['name'].rsplit('_k', 1)[0]} | {p['k']} | {p['seed']} | `{options}` | "
                     f"{ci_text(p['pbc'])} | {ci_text(p['in_domain'])} | {same} | {diff} | "
                     f"{p['adapt']['train_s']:.0f} |")
    return "\n".join(lines)


def replace_block(text: str, name: str, body: str) -> str:
    """``text`` with the lines between ``<!-- name -->`` and ``<!-- /name -->`` set to ``body``."""
    head, rest = text.split(f"<!-- {name} -->\n", 1)
    _, tail = rest.split(f"<!-- /{name} -->\n", 1)
    return f"{head}<!-- {name} -->\n{body}\n<!-- /{name} -->\n{tail}"


def figure(points: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parent = next(p for p in points if p["k"] == 0)
    parent_in = parent["in_domain"]["macro_f1"]
    ks = sorted({p["k"] for p in points if p["k"] > 0})
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    groups = sorted({steps_of(p) for p in points if p["k"] > 0}, reverse=True)
    for g, steps in enumerate(groups):
        style = "-" if g == 0 else "--"
        for key, label, colour, dx in (("pbc", "PBC held-back cells (mapped)", "C0", -0.03),
                                       ("in_domain", "in-domain test (forgetting)", "C1", 0.03)):
            means, los, his = [], [], []
            for k in ks:
                vals = [p[key]["macro_f1"] for p in points if p["k"] == k
                        and p["k"] > 0 and steps_of(p) == steps]
                m, lo, hi = mean_ci(vals)
                means.append(m)
                los.append(m - lo)
                his.append(hi - m)
                if g == 0:
                    ax.scatter([k * np.exp(dx)] * len(vals), vals, s=10, color=colour,
                               alpha=0.5)
            ax.errorbar([k * np.exp(dx + 0.06 * g) for k in ks], means, yerr=[los, his],
                        color=colour, marker="o" if g == 0 else "s", capsize=3, ls=style,
                        alpha=1.0 if g == 0 else 0.6, label=f"{label}, {steps} steps")
    ax.axhline(parent_in, color="C1", ls="--", lw=1, label=f"parent in-domain {parent_in:.3f}")
    ax.axhline(parent["plain"]["pbc"]["macro_f1"], color="C0", ls=":", lw=1,
               label="parent on PBC (k = 0)")
    ax.axhline(parent["adaptbn"]["pbc"]["macro_f1"], color="C0", ls="-.", lw=1,
               label="parent on PBC, --adapt-bn")
    ax.axhspan(parent_in - 0.05, parent_in, color="C1", alpha=0.08,
               label="within 0.05 of the parent in-domain")
    ax.set_xscale("log")
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("labelled PBC cells per class (k)")
    ax.set_ylabel("macro-F1")
    ax.set_ylim(0.3, 1.0)
    n = max(len([p for p in points if p["k"] == k and steps_of(p) == groups[0]]) for k in ks)
    ax.set_title(f"hemacnn adapt: mean of {n} draws, 95% t-interval; fp32, "
                 "AMD EPYC Zen 4, 1 thread", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    folder = Path(sys.argv[1])
    points = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    tries = [json.loads(p.read_text()) for p in sorted((folder.parent / "tries").glob("*.json"))]
    readme = folder.parent / "README.md"
    text = replace_block(readme.read_text(encoding="utf-8"), "table", table(points))
    if tries:
        text = replace_block(text, "tries", tries_table(tries, points))
    readme.write_text(text, encoding="utf-8")
    figure(points, folder.parent / "learning_curve.png")
    print(table(points))


if __name__ == "__main__":
    main()
