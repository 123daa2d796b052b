"""Ensembles of trained runs: a folder that averages its members' class probabilities.

``hemacnn ensemble RUN ... --out DIR`` writes a folder that every command taking a run accepts
(evaluate, report, compare, predict, export): ``ensemble.json`` names the member runs and their
weights, ``model_card.json`` describes the whole as one model, and
:func:`~hemacnn.inference.loading.load_ensemble` turns it into one ``torch.nn.Module`` whose output
is the
log of the weighted mean of the members' softmax probabilities. Because ``softmax(log p) = p``
when ``p`` sums to one, code that applies a softmax to a model's output gets the averaged
probabilities without knowing it holds an ensemble.

Members must share the class set (in any order) and the input preprocessing (size and resize
method): one preprocessed image then feeds every member, exactly as each was trained.

The ensemble's test split is the images no member trained or validated on: the members' common
test split when they share one (cross-validation with ``data.fold_test=holdout``, or seeds of one
config), nothing when every image was seen by some member (``fold_test=rotate`` folds), in which
case the ensemble is evaluated on other data with ``evaluate --data``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hemacnn.atomic import ensure_writable_dir, write_json
from hemacnn.card import build_card, extend_card, metrics_entry, read_card, write_card
from hemacnn.classes import class_names
from hemacnn.data.images import load_images
from hemacnn.data.splits import Splits, load_splits, save_splits
from hemacnn.errors import HemacnnError
from hemacnn.evaluation.evaluate import evaluate_run
from hemacnn.inference.loading import ENSEMBLE_FORMAT, load_checkpoint, predict_arrays
from hemacnn.rundir import RunDir, find_checkpoint
from hemacnn.runinfo import environment_info
from hemacnn.scoring.metrics import compute_metrics


def _member_cards(runs: Sequence[str | os.PathLike]) -> list[dict[str, Any]]:
    if len(runs) < 2:
        raise HemacnnError("an ensemble needs at least two runs")
    cards = []
    for run in runs:
        card = read_card(run)
        find_checkpoint(run)  # a run without a checkpoint fails here, not halfway
        cards.append(card)
    first = cards[0]
    for run, card in zip(runs, cards, strict=True):
        if sorted(card["classes"]) != sorted(first["classes"]):
            raise HemacnnError(f"run {run} has classes {', '.join(card['classes'])} but run "
                               f"{runs[0]} has {', '.join(first['classes'])}; ensemble runs "
                               "trained on the same classes")
        for key in ("input_size", "resize_method"):
            if card.get(key) != first.get(key):
                raise HemacnnError(f"run {run} has {key} {card.get(key)} but run {runs[0]} has "
                                   f"{first.get(key)}; ensemble runs that preprocess images "
                                   "alike")
    return cards


def _weights(weights: Sequence[float] | None, n: int) -> list[float]:
    if weights is None:
        return [1.0 / n] * n
    weights = [float(w) for w in weights]
    if len(weights) != n:
        raise HemacnnError(f"{len(weights)} weights for {n} runs; give one weight per run")
    if any(not np.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
        raise HemacnnError("weights must be non-negative numbers with a positive sum")
    return [w / sum(weights) for w in weights]


def _common_splits(runs: Sequence[str | os.PathLike], classes: list[str]):
    """Test = images every member held out of training and validation (None when empty)."""
    try:
        all_splits = [load_splits(RunDir(r).splits) for r in runs]
    except HemacnnError:
        return None
    seen = set().union(*({p for p, _ in s.train + s.val} for s in all_splits))
    test_sets = [set(s.test) for s in all_splits]
    test = sorted(set.intersection(*test_sets) - {x for x in test_sets[0] if x[0] in seen})
    if not test:
        return None
    trained = {x for s in all_splits for x in s.train}
    validated = {x for s in all_splits for x in s.val} - trained
    first = all_splits[0]
    return Splits(sorted(trained), sorted(validated), test, classes, first.seed,
                  first.test_fraction, first.val_fraction,
                  extra={"ensemble_of": [str(r) for r in runs],
                         "test_rule": "images no member trained or validated on"})


def make_ensemble(runs: Sequence[str | os.PathLike], out: str | os.PathLike,
                  weights: Sequence[float] | None = None, tta: bool | None = None,
                  command: str = "") -> dict[str, Any]:
    """Write an ensemble folder for ``runs`` and evaluate it on their common test split.

    Returns ``{"out", "members", "evaluation"}``; ``evaluation`` is None without a common test
    split. Each member's figures on the same images are in ``ensemble_members.json``. ``tta``
    averages the 8 dihedral views for the ensemble and every member alike; ``None``: as the
    members' own tests were scored (``recipe.test_tta``), when they all agree.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        what = ("a run or an ensemble" if RunDir(out).card.exists()
                or RunDir(out).ensemble.exists() else "files")
        raise HemacnnError(f"{out} already holds {what}; choose another --out (a new or "
                           "empty folder)")
    cards = _member_cards(runs)
    w = _weights(weights, len(runs))
    first = cards[0]
    classes = list(first["classes"])
    # The members' data folders as given, compared where they are on this machine.
    roots = {str(Path(c["data_root"]).resolve()) if c["data_root"] else None: c["data_root"]
             for c in cards}
    hashes = {c.get("manifest_hash") for c in cards}
    card = build_card(
        classes=classes, class_names=first.get("class_names") or class_names(classes),
        input_size=first["input_size"], resize_method=first["resize_method"],
        arch={"name": "ensemble", "num_classes": len(classes), "input_size": first["input_size"],
              "options": {k: v for k, v in (first["arch"].get("options") or {}).items()
                          if k == "in_channels"},
              "members": [c["arch"] for c in cards], "weights": w},
        data_root=roots.popitem()[1] if len(roots) == 1 else None,
        manifest_hash=hashes.pop() if len(hashes) == 1 else None, seed=None)
    splits = _common_splits(runs, classes) if card["data_root"] else None
    members = [{"run": os.path.relpath(Path(r).resolve(), out.resolve()), "weight": wi}
               for r, wi in zip(runs, w, strict=True)]
    # Built in a temporary folder beside OUT and renamed into place: never a half-made ensemble.
    tmp = Path(tempfile.mkdtemp(dir=ensure_writable_dir(out.parent), prefix=f".{out.name}-"))
    try:
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o777 & ~mask)  # mkdtemp's private 0700 is not what the user expects
        write_json(tmp / RunDir.CARD, card)
        write_json(tmp / RunDir.ENV, environment_info(0, command) | {"seed": None})
        if splits is not None:
            save_splits(splits, RunDir(tmp).splits)
        write_json(tmp / RunDir.ENSEMBLE, {"format": ENSEMBLE_FORMAT, "members": members})
        if out.is_dir():
            out.rmdir()  # empty (checked above)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if tta is None:
        tta = all(_tested_with_tta(r) for r in runs)
    evaluation = _evaluate_members(out, runs, w, tta) if splits is not None else None
    if evaluation is not None:  # the ensemble's figures of record, in its card
        write_card(RunDir(out).card, extend_card(card, metrics=metrics_entry(
            evaluation, RunDir.ENSEMBLE, tta)))
    return {"out": out, "members": members, "evaluation": evaluation}


def _tested_with_tta(run: str | os.PathLike) -> bool:
    try:
        return bool(json.loads(RunDir(run).test_metrics.read_text()).get("tta"))
    except (OSError, ValueError):
        return False


def _evaluate_members(out: Path, runs: Sequence[str | os.PathLike], w: list[float],
                      tta: bool = False) -> dict[str, Any]:
    """Test the ensemble; record every member's figures on the same images beside it."""
    result = evaluate_run(out, tta=tta)
    with np.load(RunDir(out).predictions(result["name"])) as z:
        paths = [str(p) for p in z["paths"]]
        y_true = z["y_true"]
    rows = []
    for run, wi in zip(runs, w, strict=True):
        probs = _member_probs(run, out, paths, result["classes"], tta)
        m = compute_metrics(y_true, probs, result["classes"])
        rows.append({"run": str(Path(run).resolve()), "weight": wi, **{k: m[k] for k in HEADLINE},
                     "tolerant_macro_f1": m["tolerant"]["macro_f1"],
                     "f1": {c: v["f1"] for c, v in m["per_class"].items()}})
    summary = {"split": "test", "n": result["n"], "tta": bool(tta), "members": rows,
               "ensemble": {**{k: result[k] for k in HEADLINE},
                            "tolerant_macro_f1": result["tolerant"]["macro_f1"],
                            "f1": {c: v["f1"] for c, v in result["per_class"].items()}}}
    write_json(out / "ensemble_members.json", summary)
    return result


HEADLINE = ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1")


def _member_probs(run: str | os.PathLike, out: Path, paths: list[str], classes: list[str],
                  tta: bool = False) -> np.ndarray:
    """A member's probabilities for the ensemble's test files, in the ensemble's class order."""
    root = Path(read_card(out)["data_root"])
    model, card = load_checkpoint(run)
    images, ok, _ = load_images([root / p for p in paths], card)
    if len(ok) != len(paths):
        raise HemacnnError(f"some test files of {out} could not be read again for member {run}")
    probs = predict_arrays(model, images, tta=tta)
    return probs[:, [card["classes"].index(c) for c in classes]]


def format_ensemble(info: dict[str, Any]) -> str:
    """The members, and on the common test split each member's figures beside the ensemble's."""
    lines = [f"ensemble of {len(info['members'])} runs written to {info['out']}"]
    summary_path = Path(info["out"]) / "ensemble_members.json"
    if info["evaluation"] is None or not summary_path.is_file():
        lines.append("no test split: every image was trained or validated on by some member "
                     "(e.g. cross-validation folds that rotate the test set); evaluate it with "
                     "`hemacnn evaluate DIR --data OTHER_FOLDER`")
        return "\n".join(lines)
    s = json.loads(summary_path.read_text(encoding="utf-8"))
    lines.append(f"test split: {s['n']} images no member trained or validated on"
                 + (", each model averaging 8 dihedral views (TTA)" if s.get("tta") else ""))
    head = f"{'':<40}{'weight':>8}{'accuracy':>10}{'bal. acc.':>11}{'macro F1':>10}{'tol. F1':>9}"
    lines += ["", head, "-" * len(head)]
    for row in s["members"]:
        lines.append(f"{Path(row['run']).name[:39]:<40}{row['weight']:>8.3f}"
                     f"{row['accuracy']:>10.4f}{row['balanced_accuracy']:>11.4f}"
                     f"{row['macro_f1']:>10.4f}{row['tolerant_macro_f1']:>9.4f}")
    e = s["ensemble"]
    lines.append(f"{'ensemble':<40}{1.0:>8.3f}{e['accuracy']:>10.4f}"
                 f"{e['balanced_accuracy']:>11.4f}{e['macro_f1']:>10.4f}"
                 f"{e['tolerant_macro_f1']:>9.4f}")
    best = max(r["macro_f1"] for r in s["members"])
    mean = sum(r["macro_f1"] for r in s["members"]) / len(s["members"])
    lines.append(f"\nmacro F1: ensemble {e['macro_f1']:.4f}, best member {best:.4f} "
                 f"({e['macro_f1'] - best:+.4f}), member mean {mean:.4f} "
                 f"({e['macro_f1'] - mean:+.4f})")
    return "\n".join(lines)
