"""How often a cell type outside the selected classes is called OTHER instead of a wrong class.

    python docs/results/recipes/other_pooling.py RUN_WITH_OTHER RUN_WITHOUT_OTHER

Images: the OTHER run's held-out test images labelled OTHER (EOS, MON, ... files that neither
model trained on; the run without OTHER never saw these cell types at all). Both models
predict them; per original cell type (the path's first folder) the table gives how many were
called OTHER, how many a wrong named class, and the mean top probability of the wrong calls.
"""

from __future__ import annotations

import csv
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from hemacnn.data.images import load_images
from hemacnn.inference.loading import load_checkpoint, predict_arrays


def _other_test_items(run: Path) -> list[str]:
    with (run / "splits" / "test.csv").open(newline="") as fh:
        return [r["path"] for r in csv.DictReader(fh) if r["class"] == "OTHER"]


def outcomes(run: Path, root: Path, paths: list[str]) -> dict[str, dict[str, float]]:
    """Per cell type: n, share called OTHER, share called a named class, their confidence."""
    model, card = load_checkpoint(run, device="cpu")
    images, ok, errors = load_images([root / p for p in paths], card)
    if errors:
        raise SystemExit(f"unreadable: {errors[0]}")  # an UnreadableImage: path and reason
    probs = predict_arrays(model, images)
    classes = card["classes"]
    per: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for i, row in zip(ok, probs, strict=True):
        per[paths[i].split("/")[0]].append((classes[int(row.argmax())], float(row.max())))
    out = {}
    for cell, preds in sorted(per.items()):
        wrong = [p for c, p in preds if c != "OTHER"]
        out[cell] = {"n": len(preds), "other": (len(preds) - len(wrong)) / len(preds),
                     "wrong": len(wrong) / len(preds),
                     "wrong_conf": float(np.mean(wrong)) if wrong else float("nan")}
    return out


def main(with_other: str, without: str) -> None:
    run_o, run_n = Path(with_other), Path(without)
    import json

    root = Path(json.loads((run_o / "model_card.json").read_text())["data_root"])
    paths = _other_test_items(run_o)
    a, b = outcomes(run_o, root, paths), outcomes(run_n, root, paths)
    print(f"{len(paths)} held-out test images of unselected cell types (OTHER run {run_o.name},"
          f" plain run {run_n.name})\n")
    print("| cell type | n | with OTHER: called OTHER | with OTHER: wrong class "
          "(mean top prob.) | without OTHER: wrong class (mean top prob.) |")
    print("|---|---|---|---|---|")
    tot = {"n": 0, "o": 0.0, "w": 0.0, "wn": 0.0}
    for cell in a:
        n = a[cell]["n"]
        print(f"| {cell} | {n} | {a[cell]['other']:.0%} | {a[cell]['wrong']:.0%} "
              f"({a[cell]['wrong_conf']:.2f}) | {b[cell]['wrong']:.0%} "
              f"({b[cell]['wrong_conf']:.2f}) |")
        tot["n"] += n
        tot["o"] += a[cell]["other"] * n
        tot["w"] += a[cell]["wrong"] * n
        tot["wn"] += b[cell]["wrong"] * n
    print(f"| all | {tot['n']} | {tot['o'] / tot['n']:.0%} | {tot['w'] / tot['n']:.0%} | "
          f"{tot['wn'] / tot['n']:.0%} |")


if __name__ == "__main__":
    main(*sys.argv[1:3])
