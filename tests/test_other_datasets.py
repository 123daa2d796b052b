"""A labelled folder that is not Matek's: same commands, and nothing Matek-specific shown.

Synthetic images (mechanics only). The folder mixes plain names with ``LYT``, a Matek code that
here means whatever its owner meant: a class set that is not all Matek codes gets no Matek names,
no tolerance groups and no published comparison.
"""

from __future__ import annotations

import json

import pytest

from factories import image_folder, tiny_config
from hemacnn.cli import main

MATEK_WORDS = ("lymphocyte", "Matek", "Whitehead", "W&R", "Table 1", "Krappe")


def test_foreign_class_names_scan_train_evaluate_report_predict(tmp_path, capsys):
    root = image_folder(tmp_path / "pbc", {"LYT": 14, "neutrophil": 14, "platelet": 14})
    assert main(["scan", str(root)]) == 0
    scan_out = capsys.readouterr().out
    assert "neutrophil" in scan_out and "Paper" not in scan_out

    run = tmp_path / "run"
    cfg = tiny_config(tmp_path / "tiny.yaml", root, data={"classes": "all"})
    assert main(["train", str(cfg), "--out", str(run), "--no-progress"]) == 0
    train_out = capsys.readouterr().out
    card = json.loads((run / "model_card.json").read_text())
    assert card["classes"] == ["LYT", "neutrophil", "platelet"]
    assert card["class_names"] == card["classes"]  # no Matek name for a code it does not know

    assert main(["evaluate", str(run), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["per_class"]["LYT"]["name"] == "LYT"
    assert result["tolerant"]["groups"] == {} and "Matek" not in result["tolerant"]["source"]
    assert result["tolerant"]["macro_f1"] == result["macro_f1"]
    assert main(["evaluate", str(run), "--data", str(root)]) == 0
    assert main(["report", str(run)]) == 0
    assert main(["predict", str(run), str(root / "LYT" / "LYT_000.jpg")]) == 0
    out = capsys.readouterr().out
    report = (run / "report.md").read_text()
    assert "| LYT | LYT |" in report and "no published figures" in report
    for text in (scan_out, train_out, out, report, (run / "report.html").read_text()):
        for word in MATEK_WORDS:
            assert word not in text, word


def test_matek_class_set_keeps_its_names_and_tolerance(tmp_path, capsys):
    """The same folder with Matek codes only gets Matek's names and tolerance groups."""
    root = image_folder(tmp_path / "bm", {"NGB": 10, "NGS": 10, "EOS": 10})
    run = tmp_path / "run"
    cfg = tiny_config(tmp_path / "tiny.yaml", root, data={"classes": ["NGB", "NGS", "EOS"]})
    assert main(["train", str(cfg), "--out", str(run), "--no-progress"]) == 0
    capsys.readouterr()
    card = json.loads((run / "model_card.json").read_text())
    assert card["class_names"] == ["band neutrophil", "segmented neutrophil", "eosinophil"]
    assert main(["evaluate", str(run), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["tolerant"]["groups"] == {"NGB": ["NGS"], "NGS": ["NGB"]}
    assert "Matek" in result["tolerant"]["source"]


def test_rare_class_dropped_with_a_note(tmp_path, capsys):
    root = image_folder(tmp_path / "d", {"LYT": 12, "neutrophil": 12, "platelet": 2})
    cfg = tiny_config(tmp_path / "tiny.yaml", root, data={"classes": "all"})
    assert main(["train", str(cfg), "data.classes=[neutrophil,platelet]", "--out",
                 str(tmp_path / "no")]) == 2
    err = capsys.readouterr().err
    # Dropping platelet would leave one class, so rare_classes=drop is not suggested (issue 7.5).
    assert "class platelet has 2 usable images" in err and "data.rare_classes=drop" not in err
    assert not (tmp_path / "no").exists()  # nothing half-written
    run = tmp_path / "run"
    with pytest.warns(UserWarning, match=r"left out .*platelet \(2\)"):
        assert main(["train", str(cfg), "data.rare_classes=drop", "--out", str(run),
                     "--no-progress"]) == 0
    assert set(json.loads((run / "model_card.json").read_text())["classes"]) == {
        "LYT", "neutrophil"}
    assert main(["report", str(run)]) == 0
    assert "left out (too few images for every split" in (run / "report.md").read_text()
