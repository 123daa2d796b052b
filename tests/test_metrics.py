"""Metric maths: hand-computed cases, edge cases, and agreement with scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import (
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)

from hemacnn.classes import CLASSES, TOLERANCE_GROUPS
from hemacnn.errors import HemacnnError
from hemacnn.scoring.metrics import bootstrap_ci, calibration, compute_metrics, wilson_interval


def onehot(pred: list[int], c: int, p: float = 0.9) -> np.ndarray:
    """Probabilities whose argmax is ``pred`` (top probability ``p``)."""
    out = np.full((len(pred), c), (1 - p) / (c - 1))
    out[np.arange(len(pred)), pred] = p
    return out


def test_hand_computed_three_classes():
    # true:  A A A A B B C C C C
    # pred:  A A A B B B C C A C
    y = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2])
    pred = [0, 0, 0, 1, 1, 1, 2, 2, 0, 2]
    m = compute_metrics(y, onehot(pred, 3), ["BLA", "LYT", "NGS"], tolerance={})
    a, b, c = m["per_class"]["BLA"], m["per_class"]["LYT"], m["per_class"]["NGS"]
    assert a["precision"] == pytest.approx(3 / 4) and a["recall"] == pytest.approx(3 / 4)
    assert b["precision"] == pytest.approx(2 / 3) and b["recall"] == pytest.approx(1.0)
    assert c["precision"] == pytest.approx(1.0) and c["recall"] == pytest.approx(3 / 4)
    assert b["f1"] == pytest.approx(2 * (2 / 3) / (2 / 3 + 1))
    assert (a["support"], b["support"], c["support"]) == (4, 2, 4)
    assert m["accuracy"] == pytest.approx(8 / 10)
    assert m["balanced_accuracy"] == pytest.approx((3 / 4 + 1 + 3 / 4) / 3)
    assert m["confusion_matrix"]["counts"] == [[3, 1, 0], [0, 2, 0], [1, 0, 3]]
    assert m["confusion_matrix"]["normalised"][0] == pytest.approx([0.75, 0.25, 0.0])
    assert m["ci_method"] == "wilson"
    # with no tolerance groups the tolerant figures equal the strict ones
    assert m["tolerant"]["macro_f1"] == pytest.approx(m["macro_f1"])
    assert m["tolerant"]["groups"] == {}


def test_wilson_interval_known_values():
    # Wilson 95% for 8/10: (0.4902, 0.9433) (standard textbook value)
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    lo, hi = wilson_interval(0, 5)
    assert lo == 0.0 and 0 < hi < 0.5
    assert wilson_interval(0, 0) is None


def test_cis_are_attached_and_contain_the_estimate():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    m = compute_metrics(y, rng.dirichlet(np.ones(3), 200), ["BLA", "LYT", "NGS"])
    for v in m["per_class"].values():
        lo, hi = v["recall_ci"]
        assert lo <= v["recall"] <= hi
        lo, hi = v["precision_ci"]
        assert lo <= v["precision"] <= hi


def test_never_predicted_class_has_precision_zero_and_a_note():
    y = np.array([0, 0, 1, 1, 2, 2])
    pred = [0, 0, 1, 1, 1, 1]  # NGS never predicted
    m = compute_metrics(y, onehot(pred, 3), ["BLA", "LYT", "NGS"], tolerance={})
    ngs = m["per_class"]["NGS"]
    assert ngs["precision"] == 0.0 and ngs["recall"] == 0.0 and ngs["f1"] == 0.0
    assert ngs["precision_ci"] is None
    assert any("never predicted" in n and "NGS" in n for n in m["notes"])
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=[0, 1, 2], zero_division=0)
    assert [m["per_class"][c]["precision"] for c in ("BLA", "LYT", "NGS")] == pytest.approx(p)
    assert m["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro", zero_division=0))


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_class_absent_from_labels_is_undefined_and_left_out_of_macro():
    y = np.array([0, 0, 0, 1, 1, 1])
    pred = [0, 0, 2, 1, 1, 1]  # NGS predicted once, never true
    m = compute_metrics(y, onehot(pred, 3), ["BLA", "LYT", "NGS"], tolerance={})
    ngs = m["per_class"]["NGS"]
    assert ngs["support"] == 0 and ngs["recall"] is None and ngs["f1"] is None
    assert ngs["precision"] == 0.0 and ngs["roc_auc"] is None
    assert any("absent" in n and "NGS" in n for n in m["notes"])
    # macro over present classes == sklearn with labels=present classes
    f = f1_score(y, pred, labels=[0, 1], average="macro", zero_division=0)
    assert m["macro_f1"] == pytest.approx(f)
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert m["accuracy"] == pytest.approx(5 / 6)


def test_tolerance_group_hit_counts_as_correct_only_for_tolerant():
    classes = ["BLA", "LYT", "NGB", "NGS"]
    # true NGB predicted NGS (tolerated), true BLA predicted LYT (not tolerated)
    y = np.array([2, 2, 2, 2, 3, 3, 0, 0, 1, 1])
    pred = [2, 2, 3, 3, 3, 3, 0, 1, 1, 1]
    m = compute_metrics(y, onehot(pred, 4), classes)  # default groups: NGB<->NGS
    assert m["per_class"]["NGB"]["recall"] == pytest.approx(0.5)
    tol = m["tolerant"]
    assert tol["per_class"]["NGB"]["recall"] == pytest.approx(1.0)
    # NGS predictions: 4, of which 2 true NGS and 2 true NGB -> strict 0.5, tolerant 1.0
    assert m["per_class"]["NGS"]["precision"] == pytest.approx(0.5)
    assert tol["per_class"]["NGS"]["precision"] == pytest.approx(1.0)
    assert tol["per_class"]["BLA"]["recall"] == pytest.approx(0.5)  # BLA->LYT stays wrong
    assert m["accuracy"] == pytest.approx(7 / 10)
    assert tol["accuracy"] == pytest.approx(9 / 10)
    assert tol["groups"] == {"NGB": ["NGS"], "NGS": ["NGB"]}


def test_tolerance_groups_are_data_and_symmetric():
    assert set(TOLERANCE_GROUPS) == set(CLASSES)
    for code, group in TOLERANCE_GROUPS.items():
        assert code in group
        for other in group:
            assert code in TOLERANCE_GROUPS[other]
    assert "NGS" in TOLERANCE_GROUPS["NGB"] and "EBO" in TOLERANCE_GROUPS["PEB"]
    assert {"LYT", "BLA"} <= TOLERANCE_GROUPS["HAC"] and {"LYT", "BLA"} <= TOLERANCE_GROUPS["LYI"]
    assert "MYB" in TOLERANCE_GROUPS["PMO"] and "MMZ" in TOLERANCE_GROUPS["MYB"]
    assert TOLERANCE_GROUPS["EOS"] == frozenset({"EOS"})


def test_agrees_with_sklearn_on_random_data():
    rng = np.random.default_rng(42)
    n, c = 500, 5
    y = rng.integers(0, c, n)
    logits = rng.normal(size=(n, c)) + 2.0 * np.eye(c)[y]  # better than chance
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    pred = probs.argmax(1)
    classes = ["BLA", "LYT", "NGB", "NGS", "EOS"]
    m = compute_metrics(y, probs, classes, tolerance={})
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=list(range(c)), zero_division=0)
    for i, code in enumerate(classes):
        v = m["per_class"][code]
        assert (v["precision"], v["recall"], v["f1"]) == pytest.approx((p[i], r[i], f[i]))
        assert v["support"] == s[i]
        assert v["roc_auc"] == pytest.approx(roc_auc_score(y == i, probs[:, i]))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert m["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert m["weighted_f1"] == pytest.approx(f1_score(y, pred, average="weighted"))
    assert m["confusion_matrix"]["counts"] == confusion_matrix(y, pred).tolist()


def test_bootstrap_interval_matches_sklearn_resamples_and_narrows_with_n():
    rng = np.random.default_rng(3)
    c = 4

    def case(n):
        y = rng.integers(0, c, n)
        pred = np.where(rng.random(n) < 0.7, y, rng.integers(0, c, n))
        return y, pred

    y, pred = case(200)
    ci = bootstrap_ci(y, pred, c, resamples=400, seed=7)
    # The same resamples scored by scikit-learn give the same percentiles.
    r = np.random.default_rng(7)
    f1s = []
    for _ in range(400):
        idx = r.integers(0, len(y), len(y))
        f1s.append(f1_score(y[idx], pred[idx], average="macro",
                            labels=np.unique(y[idx]), zero_division=0))
    assert ci["macro_f1"] == pytest.approx(list(np.percentile(f1s, [2.5, 97.5])))
    point = f1_score(y, pred, average="macro")
    assert ci["macro_f1"][0] < point < ci["macro_f1"][1]
    assert ci["accuracy"][0] < (y == pred).mean() < ci["accuracy"][1]
    # Reproducible, and narrower with 16x the images.
    assert bootstrap_ci(y, pred, c, resamples=400, seed=7) == ci
    y2, pred2 = case(3200)
    wide = ci["macro_f1"][1] - ci["macro_f1"][0]
    ci2 = bootstrap_ci(y2, pred2, c, resamples=400, seed=7)
    assert ci2["macro_f1"][1] - ci2["macro_f1"][0] < wide / 2
    assert compute_metrics(y, np.eye(c)[pred], [f"c{i}" for i in range(c)],
                           tolerance={})["headline_ci"]["macro_f1"][0] < point


def test_calibration_hand_computed():
    # two bins: (0, .5], (.5, 1]; confidences .9 (right), .9 (wrong), .6 (right), .4 (right)
    y = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.1, 0.9], [0.4, 0.6], [0.4, 0.6]])
    probs[3] = [0.6, 0.4]  # predicts class 0 for a true 1: wrong, conf .6
    cal = calibration(y, probs, n_bins=2)
    hi = cal["bins"][1]
    assert hi["count"] == 4 and hi["confidence"] == pytest.approx(0.75)
    assert hi["accuracy"] == pytest.approx(0.5)
    assert cal["ece"] == pytest.approx(0.25)
    assert cal["bins"][0]["count"] == 0 and cal["bins"][0]["accuracy"] is None


def test_bad_shapes_are_user_errors():
    with pytest.raises(HemacnnError, match="expected"):
        compute_metrics(np.array([0, 1]), np.ones((2, 3)) / 3, ["BLA", "LYT"])
    with pytest.raises(HemacnnError, match="0 images"):
        compute_metrics(np.array([], dtype=int), np.ones((0, 2)), ["BLA", "LYT"])
