"""`hemacnn demo`: the whole job on the real sample shipped inside the package."""

from __future__ import annotations

from pathlib import Path

import yaml

from hemacnn.cli import main
from hemacnn.demo import demo_config, sample_root

REPO = Path(__file__).resolve().parents[1]


def test_shipped_sample_is_small_real_and_cited():
    root = sample_root()
    files = sorted(root.rglob("*.jpg"))
    assert {f.parent.name for f in files} == {"BLA", "LYT", "NGS"}
    assert all(len([f for f in files if f.parent.name == c]) == 45 for c in ("BLA", "LYT", "NGS"))
    assert sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) <= 6_000_000
    readme = (root / "README.md").read_text(encoding="utf-8")
    assert "doi:10.7937/TCIA.AXH3-T579" in readme and "CC BY 4.0" in readme


def test_demo_config_trains_the_quick_model():
    demo = yaml.safe_load(demo_config().read_text())
    quick = yaml.safe_load((REPO / "configs" / "quick.yaml").read_text())
    assert demo["model"] == quick["model"] and demo["optimizer"] == quick["optimizer"]
    same = ("classes", "image_size", "resize", "test_fraction", "val_fraction", "augment")
    assert {k: demo["data"][k] for k in same} == {k: quick["data"][k] for k in same}


def test_demo_runs_scan_train_evaluate_report(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "trainer.max_epochs=1", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "135 images in" in printed and "Usable for training: 135 of 135" in printed
    assert "epoch 1/1" in printed and "macro F1" in printed
    assert f"report: {out / 'report.html'}" in printed and f"run folder: {out}" in printed
    for name in ("report.html", "report.md", "test_metrics.json", "evaluation_test.json",
                 "checkpoints/best.ckpt"):
        assert (out / name).is_file(), name
    assert not list(sample_root().rglob("*.npy"))  # nothing written into the package
