"""The PBC figures of this folder recomputed in PBC's own classes from the committed files.

Usage (repository root): python docs/results/domain_shift/recheck.py > docs/results/domain_shift/recheck.md

The evaluations in runs/ were scored under the earlier class-map rule (a cell whose folder maps
to several model classes took its label from the model's own call). This reads each committed
mapped evaluation JSON, resolves the shipped map against its model's classes under the current
rule (:mod:`hemacnn.scoring.mapped`), and recomputes from the committed confusion matrices
(PBC's, and the run's own test split's for the in-domain side) every figure that a confusion
matrix determines: per-class precision, recall and F1, macro-F1 and accuracy, in PBC's classes.
It prints them beside the recorded ones and checks whether every model class stands for exactly
one PBC folder (then the summed probability of a folder is its one class's probability, so the
ROC-AUC and calibration are the recorded ones too). Bootstrap intervals need the cells in order
and are not recomputed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from hemacnn.scoring.classmap import load_class_map, resolve
from hemacnn.scoring.mapped import in_domain_mapped

HERE = Path(__file__).resolve().parent


def _row(path: Path) -> dict:
    saved = json.loads(path.read_text(encoding="utf-8"))
    resolved = resolve(load_class_map(saved["class_map"]["name"]), saved["classes"])
    one_each = (len(resolved.target_of) == len(resolved.model_classes)
                and all(len(resolved.members(t)) == 1 for t in resolved.targets))
    pbc = in_domain_mapped(resolved, saved["confusion_matrix"])
    counts = np.asarray(saved["confusion_matrix"]["counts"])
    hits = sum(counts[i, j] for i, a in enumerate(saved["classes"])
               for j, b in enumerate(saved["classes"])
               if resolved.target_of.get(a) == resolved.target_of.get(b) is not None)
    own = Path(saved["class_map"]["in_domain"]["source"]).name
    inside = json.loads((path.parent / own).read_text(encoding="utf-8"))
    in_dom = in_domain_mapped(resolved, inside["confusion_matrix"])
    recorded_in = {c: saved["class_map"]["in_domain"]["per_class"][resolved.members(c)[0]]["f1"]
                   for c in resolved.targets}
    return {"file": f"{path.parent.name}/{path.name}", "one_each": one_each,
            "targets": {t: resolved.members(t) for t in resolved.targets},
            "macro": (saved["macro_f1"], pbc["macro_f1"]),
            "accuracy": (saved["accuracy"], float(hits / counts.sum())),
            "f1": {t: (saved["per_class"][resolved.members(t)[0]]["f1"], pbc["per_class"][t]["f1"])
                   for t in resolved.targets},
            "in_domain_macro": (saved["class_map"]["in_domain"]["macro_f1"], in_dom["macro_f1"]),
            "in_domain_f1": {t: (recorded_in[t], in_dom["per_class"][t]["f1"])
                             for t in resolved.targets}}


def _pair(old: float, new: float) -> str:
    return f"{old:.3f}" if abs(old - new) < 5e-10 else f"{old:.3f} → **{new:.3f}**"


def main() -> int:
    """Print the Markdown comparison; non-zero when a recomputed figure differs."""
    rows = [_row(p) for p in sorted((HERE / "runs").glob("*/evaluation_data-*.json"))]
    targets = list(rows[0]["targets"])
    print("# The PBC figures recomputed in PBC's classes\n")
    print("Written by `recheck.py` from the committed evaluation JSON files in `runs/`. "
          "Each cell: the recorded figure (earlier rule); an arrow and the recomputed one "
          "where they differ.\n")
    print("PBC class ← model classes: "
          + "; ".join(f"{t} ← {'/'.join(c)}" for t, c in rows[0]["targets"].items()) + ".\n")
    head = ["evaluation", "one model class per PBC class", "PBC macro F1", "PBC accuracy",
            *[f"PBC F1 {t}" for t in targets], "in-domain macro F1 (all classes → PBC's)",
            *[f"in-domain F1 {t}" for t in targets]]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    differ = 0
    for r in rows:
        pairs = [r["macro"], r["accuracy"], *r["f1"].values(), r["in_domain_macro"],
                 *r["in_domain_f1"].values()]
        differ += sum(abs(a - b) >= 5e-10 for a, b in pairs)
        cells = [r["file"], "yes" if r["one_each"] else "no", *(_pair(*p) for p in pairs)]
        print("| " + " | ".join(cells) + " |")
    print(f"\n{differ} figures differ. "
          + ("Every model class stands for exactly one PBC class, so the ROC-AUC and "
             "calibration (over each PBC class's summed probability: its one class's) are the "
             "recorded ones too." if all(r["one_each"] for r in rows) else
             "ROC-AUC and calibration need the probabilities, which are not committed."))
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
