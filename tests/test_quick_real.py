"""The README's main job on real Matek images: configs/quick.yaml on the shared sample.

This is the accuracy claim of the quick config, so it runs on real images only (skipped with a
reason where ../shared/data is absent). About two minutes on 2 cores with native bf16, six
minutes on an AVX2-only CPU (fp32).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hemacnn.cli import main

# Trains the quick config on the real sample and scores its accuracy: minutes.
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def test_quick_config_reaches_paper_level_macro_f1_on_real_images(sample_root, tmp_path, capsys):
    run = tmp_path / "quick"
    code = main(["train", str(REPO / "configs" / "quick.yaml"), f"data.root={sample_root}",
                 "data.classes=[BLA,LYT,NGS]", "--out", str(run), "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "macro F1" in printed and f"run folder: {run}" in printed
    metrics = json.loads((run / "test_metrics.json").read_text())
    n_test = sum(1 for _ in (run / "splits" / "test.csv").open()) - 1
    assert metrics["n"] == n_test == 100  # 33 BLA + 35 LYT + 32 NGS held out
    # A comparable small model reaches 0.84-0.89 on these classes; the issue asks >= 0.85.
    assert metrics["macro_f1"] >= 0.85, metrics["macro_f1"]
    for code_ in ("BLA", "LYT", "NGS"):
        assert metrics["per_class"][code_]["f1"] >= 0.75, (code_, metrics["per_class"][code_])
