"""The differential's adjusted shares: the model's test confusion corrects the counts, and the
bootstrap interval covers counting noise and the test split's size alike."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from hemacnn.inference.differential import (
    ModelConfusion,
    differential,
    format_differential,
    write_differential,
)
from hemacnn.scoring.prevalence import adjusted_shares

# A model that finds 60% of blasts (the rest called lymphocytes or neutrophils) and 95% of the
# others; a marrow of 250 cells that holds exactly 20% blasts.
RECALL = np.array([[0.60, 0.30, 0.10],
                   [0.02, 0.95, 0.03],
                   [0.02, 0.03, 0.95]])
TRUE = np.array([0.20, 0.50, 0.30])
CLASSES = ["BLA", "LYT", "NGS"]


def _called(n: int = 250) -> np.ndarray:
    """The expected predicted counts of ``n`` cells (no sampling: the test is exact)."""
    return np.round(n * TRUE @ RECALL).astype(int)


def _test_split(per_class: int) -> np.ndarray:
    return np.round(RECALL * per_class).astype(int)


def test_adjusted_interval_covers_the_true_share_where_wilson_misses():
    called = _called()
    d = differential([c for c, k in zip(CLASSES, called, strict=True) for _ in range(k)],
                     CLASSES, confusion=ModelConfusion(_test_split(200), "made up"))
    bla = d["rows"][0]
    assert bla["class"] == "BLA" and bla["count"] == 34  # 13.6% called blasts
    assert bla["ci95_high"] < 20.0  # counting noise alone: the interval misses 20%
    assert bla["adjusted_ci95_low"] <= 20.0 <= bla["adjusted_ci95_high"]
    assert bla["adjusted_percent"] == pytest.approx(20.0, abs=0.5)
    assert bla["test_recall"] == pytest.approx(0.6) and bla["test_cells"] == 200
    assert sum(r["adjusted_percent"] for r in d["rows"]) == pytest.approx(100.0, abs=1e-3)
    text = format_differential(d)
    assert "adj. %" in text and "0.60 (n=200)" in text and "Saerens" in text


def test_bootstrap_is_seeded_and_widens_with_a_smaller_test_split():
    called = _called()
    a = adjusted_shares(called, _test_split(200), seed=3)
    b = adjusted_shares(called, _test_split(200), seed=3)
    other = adjusted_shares(called, _test_split(200), seed=4)
    assert np.array_equal(a.low, b.low) and np.array_equal(a.high, b.high)
    assert not np.array_equal(a.low, other.low)
    small = adjusted_shares(called, _test_split(20), seed=3)
    assert (small.high - small.low)[0] > (a.high - a.low)[0]
    # the shares are shares: non-negative, summing to one (not the plain inverse, which can
    # go below zero)
    assert a.share.min() >= 0 and a.share.sum() == pytest.approx(1.0)


def test_a_class_with_too_few_test_cells_keeps_its_raw_figures(tmp_path):
    cm = _test_split(200)
    cm[2] = [0, 1, 5]  # six test neutrophils: too few to measure the model's errors on them
    called = _called()
    d = differential([c for c, k in zip(CLASSES, called, strict=True) for _ in range(k)],
                     CLASSES, confusion=ModelConfusion(cm, "made up"))
    ngs = next(r for r in d["rows"] if r["class"] == "NGS")
    assert ngs["adjusted"] is False and ngs["test_cells"] == 6
    assert (ngs["adjusted_percent"], ngs["adjusted_ci95_low"], ngs["adjusted_ci95_high"]) == (
        pytest.approx(ngs["percent"]), pytest.approx(ngs["ci95_low"]),
        pytest.approx(ngs["ci95_high"]))
    assert any("too few test cells" in n and "NGS" in n for n in d["notes"])
    assert "under 10 test cells: not adjusted" in format_differential(d)
    csv_path, json_path = write_differential(d, tmp_path / "cells.csv")
    header = csv_path.read_text().splitlines()[0].split(",")
    assert header[6:] == ["adjusted_percent", "adjusted_ci95_low", "adjusted_ci95_high",
                          "adjusted", "test_recall", "test_cells"]
    assert json.loads(json_path.read_text())["adjustment"]["not_adjusted"] == ["NGS"]


def test_without_a_test_confusion_the_differential_says_it_is_not_adjusted():
    d = differential(["BLA", "LYT"], CLASSES)
    assert d["rows"][0]["adjusted_percent"] is None and d["adjustment"]["method"] is None
    assert any(n.startswith("not adjusted for the model's errors") for n in d["notes"])


HELD_BACK = {"BLA": 50, "LYT": 100, "NGS": 100}  # 250 cells, exactly 20% blasts


@pytest.mark.slow
def test_adjusted_blast_interval_covers_20_percent_on_held_back_real_cells(
        sample_root, tmp_path, capsys):
    """Train the quick model (48 px, 2 epochs) on the sample less 250 held-back cells, then
    predict those cells (50 blasts, 200 others): the adjusted blast interval covers 20%."""
    from hemacnn.cli import main  # lazy: the CLI trains (torch); the fast tests above need none

    started = time.perf_counter()
    train_root, cells = tmp_path / "train", tmp_path / "cells"
    for code, keep_out in HELD_BACK.items():
        files = sorted((sample_root / code).rglob("*.jpg"))
        for dest, chosen in ((cells, files[-keep_out:]), (train_root, files[:-keep_out])):
            (dest / code).mkdir(parents=True)
            for f in chosen:
                shutil.copy(f, dest / code / f.name)
    run = tmp_path / "run"
    assert main(["train", str(Path(__file__).parents[1] / "configs" / "quick.yaml"),
                 f"data.root={train_root}", "data.classes=[BLA,LYT,NGS]", "data.image_size=48",
                 "trainer.max_epochs=2", "--out", str(run), "--no-progress"]) == 0
    capsys.readouterr()
    out = tmp_path / "cells.csv"
    assert main(["predict", str(run), str(cells), "--out", str(out), "--differential"]) == 0
    printed = capsys.readouterr().out
    bla = json.loads((tmp_path / "cells.differential.json").read_text())["rows"][0]
    with capsys.disabled():
        print(f"\n{printed}\nwall time {time.perf_counter() - started:.0f} s")
    assert bla["class"] == "BLA" and bla["adjusted"]
    assert bla["adjusted_ci95_low"] <= 20.0 <= bla["adjusted_ci95_high"]
