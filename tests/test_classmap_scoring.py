"""Another dataset's cells scored in that dataset's classes: made-up arrays, no model, no files."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from hemacnn.errors import HemacnnError
from hemacnn.scoring.classmap import parse_class_map, resolve
from hemacnn.scoring.mapped import (
    UNMAPPED,
    class_map_record,
    format_mapped,
    in_domain_mapped,
    score_mapped,
    side_by_side,
    target_scores,
)
from hemacnn.scoring.metrics import compute_metrics

MODEL = ["LYT", "PMO", "MYB", "BLA"]  # BLA: no counterpart in the other dataset


def _resolved():
    cmap = parse_class_map({"format": "hemacnn-classmap/1", "name": "made-up",
                            "classes": {"lymphocyte": "LYT", "ig": ["PMO", "MYB", "MMZ"],
                                        "platelet": []},
                            "optional": {"MMZ": None}}, "made-up map")
    return resolve(cmap, MODEL)


def _probs(calls: list[str], top: float = 0.7) -> np.ndarray:
    """One row per call: ``top`` on the called class, the rest spread evenly."""
    rest = (1 - top) / (len(MODEL) - 1)
    probs = np.full((len(calls), len(MODEL)), rest)
    probs[np.arange(len(calls)), [MODEL.index(c) for c in calls]] = top
    return probs


# Six ig cells called MYB, MYB, PMO, LYT, LYT, BLA; four lymphocytes called LYT, LYT, MYB, BLA.
CALLS = ["MYB", "MYB", "PMO", "LYT", "LYT", "BLA", "LYT", "LYT", "MYB", "BLA"]
TRUTH = ["ig"] * 6 + ["lymphocyte"] * 4


def _earlier_rule(cell_targets: list[tuple[str, ...]], probs: np.ndarray) -> np.ndarray:
    """The rule this replaces: the model's own call when it is among the truth's classes, else
    the truth's first class."""
    pred = probs.argmax(axis=1)
    return np.array([p if MODEL[p] in t else MODEL.index(t[0])
                     for p, t in zip(pred, cell_targets, strict=True)])


def test_recall_of_a_class_sharing_a_folder_is_the_folders_not_one_by_construction():
    resolved = _resolved()
    assert resolved.targets == ("lymphocyte", "ig")
    assert resolved.target_of == {"LYT": "lymphocyte", "PMO": "ig", "MYB": "ig"}
    probs = _probs(CALLS)
    cells = [resolved.scored[t] for t in TRUTH]

    old = compute_metrics(_earlier_rule(cells, probs), probs, MODEL)
    assert old["per_class"]["MYB"]["recall"] == 1.0  # the bias: MYB-labelled = MYB-called
    assert old["accuracy"] == pytest.approx(5 / 10)

    scores = target_scores(resolved, cells, probs)
    assert scores.classes == ["lymphocyte", "ig", UNMAPPED]
    new = score_mapped(scores)
    ig, lyt = new["per_class"]["ig"], new["per_class"]["lymphocyte"]
    assert ig["recall"] == pytest.approx(3 / 6)  # MYB, MYB, PMO of six ig cells
    assert ig["precision"] == pytest.approx(3 / 4)  # and one lymphocyte called MYB
    assert lyt["recall"] == pytest.approx(2 / 4)
    assert lyt["precision"] == pytest.approx(2 / 4)  # two ig cells called LYT
    assert new["macro_f1"] == pytest.approx(np.mean([2 * .75 * .5 / 1.25, .5]))
    assert new["accuracy"] == pytest.approx(old["accuracy"])  # accuracy was exact before
    # calls of BLA are wrong wherever they fall: their own predicted column, an empty row
    assert new["confusion_matrix"]["labels"] == ["lymphocyte", "ig", UNMAPPED]
    assert new["confusion_matrix"]["counts"] == [[2, 1, 1], [2, 3, 1], [0, 0, 0]]
    assert new["per_class"][UNMAPPED]["precision"] == 0.0
    assert new["per_class"][UNMAPPED]["support"] == 0
    # calibration: the confidence is the called folder's summed probability
    # (0.8 = the called ig class's 0.7 + the other ig class's 0.1; 0.7 for any other call)
    bins = {round(b["confidence"], 6): b for b in new["calibration"]["bins"] if b["count"]}
    assert bins[0.8]["count"] == 4 and bins[0.8]["accuracy"] == pytest.approx(3 / 4)
    assert bins[0.7]["count"] == 6 and bins[0.7]["accuracy"] == pytest.approx(2 / 6)


def test_auc_ranks_each_folders_summed_probability():
    resolved = _resolved()
    #              LYT   PMO   MYB   BLA       ig sum
    probs = np.array([[.20, .35, .40, .05],   # ig   .75
                      [.50, .25, .20, .05],   # ig   .45
                      [.60, .00, .30, .10],   # lym  .30
                      [.40, .30, .20, .10]])  # lym  .50
    cells = [resolved.scored[t] for t in ["ig", "ig", "lymphocyte", "lymphocyte"]]
    scores = target_scores(resolved, cells, probs)
    np.testing.assert_allclose(scores.probs[:, 1], [.75, .45, .30, .50])
    m = score_mapped(scores)
    # ig above lymphocyte in 3 of the 4 (ig, lymphocyte) pairs: .75>.30, .75>.50, .45>.30
    assert m["per_class"]["ig"]["roc_auc"] == pytest.approx(3 / 4)
    assert m["per_class"]["ig"]["roc_auc"] == pytest.approx(
        roc_auc_score([1, 1, 0, 0], probs[:, 1] + probs[:, 2]))
    # neither column alone ranks the same way
    assert roc_auc_score([1, 1, 0, 0], probs[:, 2]) != pytest.approx(3 / 4)
    assert m["per_class"][UNMAPPED]["roc_auc"] is None


def test_a_model_class_under_two_folders_is_an_error_at_resolve():
    cmap = parse_class_map({"format": "hemacnn-classmap/1",
                            "classes": {"ig": ["PMO", "MYB"], "myelocyte": ["MYB"]}}, "two.yaml")
    with pytest.raises(HemacnnError, match="MYB stands for both ig and myelocyte"):
        resolve(cmap, MODEL)
    # ... also when an optional stand-in brings two folders onto one class
    cmap = parse_class_map({"format": "hemacnn-classmap/1",
                            "classes": {"ig": ["PMO"], "band": ["NGB"]},
                            "optional": {"NGB": "PMO"}}, "stand-in.yaml")
    with pytest.raises(HemacnnError, match="PMO stands for both ig and band"):
        resolve(cmap, MODEL)


def test_in_domain_side_reads_the_test_split_through_the_same_map():
    resolved = _resolved()
    # run's own test split: rows truth, columns call (LYT, PMO, MYB, BLA)
    counts = [[9, 0, 1, 0],   # LYT: one called MYB
              [0, 6, 4, 0],   # PMO: four called MYB (right for ig)
              [0, 2, 7, 1],   # MYB: one called BLA
              [1, 0, 0, 9]]   # BLA: one called LYT (a wrong lymphocyte call)
    inside = in_domain_mapped(resolved, {"labels": MODEL, "counts": counts})
    ig, lyt = inside["per_class"]["ig"], inside["per_class"]["lymphocyte"]
    assert ig["support"] == 20 and ig["recall"] == pytest.approx(19 / 20)
    assert ig["precision"] == pytest.approx(19 / 20)  # the lymphocyte called MYB
    assert lyt["support"] == 10 and lyt["recall"] == pytest.approx(9 / 10)
    assert lyt["precision"] == pytest.approx(9 / 10)  # the BLA called LYT

    probs = _probs(CALLS)
    scores = target_scores(resolved, [resolved.scored[t] for t in TRUTH], probs)
    result = {**score_mapped(scores), "class_map": class_map_record(
        resolved, scores, {"platelet": 3},
        {"source": "test", "macro_f1": 0.9, "confusion_matrix": {"labels": MODEL,
                                                                  "counts": counts}})}
    assert result["class_map"]["unmapped"] == ["BLA"]
    assert result["class_map"]["model_calls"]["counts"] == [[2, 0, 1, 1], [2, 1, 2, 1]]
    rows = side_by_side(result)
    assert [(r["class"], r["model_classes"]) for r in rows] == [
        ("lymphocyte", ["LYT"]), ("ig", ["PMO", "MYB"])]
    assert rows[1]["in_domain"]["recall"] == pytest.approx(19 / 20)
    assert rows[1]["other"]["recall"] == pytest.approx(3 / 6)
    text = "\n".join(format_mapped(result))
    assert "ig <- PMO/MYB" in text and "calls of BLA (no counterpart here) count as wrong" in text
    assert "ig (PMO/MYB)" in text and "left out (not scored): platelet 3" in text
    assert "macro F1 over these 2 classes: in-domain 0.925" in text


def test_an_evaluation_saved_under_the_earlier_rule_is_named_not_tabled():
    old = {"n": 10, "macro_f1": 0.5, "per_class": {},
           "class_map": {"name": "matek-pbc", "source": "x", "scored": {"ig": ["PMO"]},
                         "left_out": {}}}
    assert side_by_side(old) == []
    assert "earlier rule" in format_mapped(old)[-1]


def test_a_call_is_right_when_its_class_stands_for_the_cells_folder():
    """predict's ``correct`` column: the same rule as evaluate's figures (folder level)."""
    from hemacnn.scoring.classmap import load_class_map

    resolved = resolve(load_class_map("matek-pbc"), ["BLA", "LYT", "NGB", "NGS"])
    truth, got = resolved.label("neutrophil", "BNE_1.jpg")
    assert (truth, got) == ("neutrophil/BNE_", ("NGB",))
    assert resolved.correct(got, "NGB") and resolved.correct(got, "NGS")  # both: neutrophil
    assert not resolved.correct(got, "LYT") and not resolved.correct(got, "BLA")
