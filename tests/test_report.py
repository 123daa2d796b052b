"""evaluate_run, format_evaluation, plots, the comparison report and its HTML in a browser."""

from __future__ import annotations

import base64
import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from factories import fake_labelled_run, fake_run, labelled_images
from hemacnn.cli import main
from hemacnn.errors import HemacnnError
from hemacnn.evaluation.evaluate import evaluate_predictions, evaluate_run, format_evaluation
from hemacnn.evaluation.published import load_published
from hemacnn.evaluation.report import compare_runs, write_report
from hemacnn.scoring.metrics import compute_metrics

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Evaluate and report are the figures' own tests: drawn as for a user.
pytestmark = pytest.mark.usefixtures("figures")


@pytest.fixture()
def run(tmp_path: Path) -> Path:
    return fake_labelled_run(tmp_path, per_class=5)


def test_evaluate_run_writes_json_npz_and_figures(run: Path):
    result = evaluate_run(run)
    assert result["split"] == "test" and result["n"] == 15
    out = json.loads((run / "evaluation_test.json").read_text())
    assert out["per_class"].keys() == {"BLA", "LYT", "NGS"}
    for key in ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1"):
        assert 0 <= out[key] <= 1 and key in out["tolerant"]
    for key in ("confusion", "confusion_normalised", "reliability"):
        assert Path(out["outputs"][key]).read_bytes()[:8] == PNG_MAGIC
    with np.load(run / "predictions_test.npz") as z:
        assert z["probs"].shape == (15, 3) and list(z["classes"]) == ["BLA", "LYT", "NGS"]
        assert z["paths"][0].startswith("BLA/")
        again = compute_metrics(z["y_true"], z["probs"], list(z["classes"]))  # recomputable
    assert again["macro_f1"] == pytest.approx(out["macro_f1"])
    text = format_evaluation(result)
    assert "precision" in text and "BLA" in text and "strict:" in text and "tolerant:" in text
    assert "Wilson" in text


def test_evaluate_tta_and_out_folder(run: Path, tmp_path: Path):
    out = tmp_path / "elsewhere"
    result = evaluate_run(run, split="val", tta=True, out=out)
    assert result["tta"] and result["name"] == "val_tta"
    assert (out / "evaluation_val_tta.json").is_file()
    assert not (run / "evaluation_val_tta.json").exists()


def test_evaluate_on_another_folder_skips_unknown_classes_and_bad_files(run: Path,
                                                                        tmp_path: Path):
    other = tmp_path / "other"
    labelled_images(other, per_class=3, classes=("LYT", "NGS", "EOS"))
    (other / "LYT" / "broken.jpg").write_bytes(b"")  # fails validation
    result = evaluate_run(run, data=other)
    assert result["n"] == 6 and result["skipped_classes"] == {"EOS": 3}
    assert [s["path"] for s in result["skipped_files"]] == ["LYT/broken.jpg"]
    assert result["per_class"]["BLA"]["support"] == 0 and result["per_class"]["BLA"][
        "recall"] is None
    text = format_evaluation(result)
    assert "EOS (3)" in text and "LYT/broken.jpg" in text
    assert (run / "evaluation_data-other.json").is_file()


def test_evaluate_bad_input_gives_one_line_errors(run: Path, tmp_path: Path, capsys):
    with pytest.raises(HemacnnError, match="not a hemacnn run folder"):
        evaluate_run(tmp_path / "data")
    with pytest.raises(HemacnnError, match="data folder .* not found"):
        evaluate_run(run, data=tmp_path / "missing")
    only_eos = tmp_path / "eos"
    labelled_images(only_eos, per_class=1, classes=("EOS",))
    with pytest.raises(HemacnnError, match="no usable images of the model's classes"):
        evaluate_run(run, data=only_eos)
    card = json.loads((run / "model_card.json").read_text())
    (run / "model_card.json").write_text(json.dumps({**card, "data_root": "/nonexistent"}))
    with pytest.raises(HemacnnError, match="data_root\\) not found; evaluate with --data"):
        evaluate_run(run)
    (run / "checkpoints" / "best.ckpt").unlink()
    assert main(["evaluate", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no checkpoints/best.ckpt" in err
    assert err.count("\n") == 1


def test_evaluate_cli_json(run: Path, capsys):
    assert main(["evaluate", str(run), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["per_class"]) == {"BLA", "LYT", "NGS"}
    assert {"accuracy", "balanced_accuracy", "macro_f1", "weighted_f1"} <= set(out["tolerant"])
    assert out["ci_method"] == "wilson"


def test_evaluate_predictions_for_train_py(tmp_path: Path):
    y = np.array([0, 1, 2, 3, 3])
    probs = np.eye(4)[[0, 1, 3, 3, 2]] * 0.7 + 0.075
    m = evaluate_predictions(y, probs, ["BLA", "LYT", "NGB", "NGS"], tmp_path, name="test")
    assert (tmp_path / "evaluation_test.json").is_file()
    assert (tmp_path / "plots" / "confusion_test.png").read_bytes()[:8] == PNG_MAGIC
    assert m["tolerant"]["accuracy"] == pytest.approx(1.0)  # NGB<->NGS swaps are tolerated
    assert m["accuracy"] == pytest.approx(3 / 5)


def test_published_figures_are_the_papers():
    pubs = {p.key: p for p in load_published()}
    mv3 = pubs["whitehead_mv3"]
    assert mv3.pr_order == "unknown"
    assert {c: mv3.f1(c) for c in ("NGB", "NGS", "LYT", "BLA")} == {
        "NGB": 0.6839, "NGS": 0.8793, "LYT": 0.9180, "BLA": 0.8622}
    assert pubs["whitehead_vgg16"].per_class["NGB"] == {"recall": 0.8114, "precision": 0.6856,
                                                        "f1": 0.7432}
    matek = pubs["matek2021_strict"]
    assert matek.per_class["NGS"] == {"precision": 0.92, "recall": 0.71}
    assert matek.f1("BLA") == pytest.approx(0.70, abs=0.005)  # W&R Table 7 quotes 0.70
    assert len(matek.per_class) == 21 and all(p.citation for p in pubs.values())


def test_report_markdown_html_and_compare(run: Path, tmp_path: Path):
    evaluate_run(run)
    second = tmp_path / "run2"
    shutil.copytree(run, second)
    (second / "evaluation_test.json").unlink()  # the report falls back to the saved predictions
    md, page = write_report([run, second])
    assert md == run / "report.md" and page == run / "report.html"
    text = md.read_text()
    assert "| class | name | precision | recall | F1 | support |" in text
    assert "Whitehead & Ramirez 2022, MV3 (Table 6)" in text and "| NGB |" not in text  # no NGB
    assert "0.879" in text and "NOT like for like" in text and "Class set: this run 3" in text
    # Three decimals throughout (the test split here has 5 images per class), never four.
    assert not re.search(r"\b\d\.\d{4}", text)
    # The bootstrap intervals `hemacnn evaluate` prints, in both documents.
    hci = json.loads((run / "evaluation_test.json").read_text())["headline_ci"]
    for key in ("accuracy", "macro_f1"):
        interval = f"[{hci[key][0]:.3f}–{hci[key][1]:.3f}]"
        assert interval in text and html.escape(interval) in page.read_text(), key
    assert "95% percentile bootstrap intervals (2,000 resamples" in text
    assert "order uncertain" in text
    for link in [ln for ln in text.splitlines() if ln.startswith("![")]:
        assert (md.parent / link.split("](")[1].rstrip(")")).is_file()
    body = page.read_text()
    assert "<img" in body and "report_files" not in body  # self-contained
    table = compare_runs([run, second])
    assert "macro F1" in table and table.count("\n") == 3 and "run2" in table
    with pytest.raises(HemacnnError, match="not a hemacnn run folder"):
        write_report([tmp_path])


def _img_sources(page: str) -> list[str]:
    import re

    return re.findall(r'<img [^>]*src="([^"]+)"', page)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed "
                    "(apt-get install -y chromium) - cannot check the HTML report in a browser")
@pytest.mark.slow  # browser
def test_html_report_renders_in_headless_chromium(run: Path, tmp_path: Path):
    evaluate_run(run)
    _, page = write_report([run], out=tmp_path / "out" / "report.md")
    srcs = _img_sources(page.read_text())
    assert len(srcs) == 5  # curves, P/R, confusion x2, reliability
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == PNG_MAGIC
    shot = tmp_path / "shot.png"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
           f"--screenshot={shot}", "--window-size=1200,2000", page.as_uri()]
    subprocess.run(cmd, capture_output=True, timeout=120, env={**os.environ, "HOME": str(tmp_path)})
    assert shot.is_file(), "chromium wrote no screenshot"
    img = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert img.shape == (2000, 1200)
    assert img.std() > 10  # not a blank page: text, tables and figures drawn
    assert (img < 128).mean() > 0.005


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed "
                    "(apt-get install -y chromium) - cannot measure the HTML report")
@pytest.mark.slow  # browser
def test_headline_table_fits_a_1280_px_window(run: Path, tmp_path: Path):
    from playwright.sync_api import sync_playwright

    evaluate_run(run)
    # Two runs named as `hemacnn train` names them: the widest headline table a user compares.
    runs = [tmp_path / "quick-20261125-181500", tmp_path / "quick-20261125-190102"]
    for r in runs:
        shutil.copytree(run, r)
    _, page = write_report(runs, out=tmp_path / "out" / "report.md")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync"]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=flags)
        tab = browser.new_page(viewport={"width": 1280, "height": 900})
        tab.goto(page.as_uri())
        sizes = tab.evaluate("""() => ({
            page: [document.documentElement.scrollWidth, document.documentElement.clientWidth],
            tables: [...document.querySelectorAll('.table-wrap')].map(
                w => [w.scrollWidth, w.clientWidth]),
            ece: [...document.querySelectorAll('th')].find(
                th => th.textContent === 'ECE').getBoundingClientRect().right,
        })""")
        tab.screenshot(path=str(tmp_path / "report-1280.png"))
        browser.close()
    assert sizes["page"][0] <= sizes["page"][1], sizes  # no horizontal scroll of the page
    head_scroll, head_width = sizes["tables"][0]  # the headline table comes first
    assert head_scroll <= head_width, sizes  # nor inside the headline table's own box
    assert sizes["ece"] <= 1280, sizes  # its last column (ECE) in view


def test_reliability_legend_covers_no_bar(tmp_path: Path, monkeypatch):
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    import hemacnn.evaluation.plots as plots

    kept = []
    monkeypatch.setattr(plots, "_save", lambda fig, out_png: kept.append(fig) or out_png)
    # The first bin full and right: its bar reaches the top left, where a legend used to sit.
    bins = [{"lo": i / 10, "hi": (i + 1) / 10, "count": 3, "accuracy": 1.0 if i == 0 else i / 10,
             "confidence": i / 10 + 0.05} for i in range(10)]
    plots.plot_reliability(bins, tmp_path / "r.png", ece=0.1, split="test")
    fig = kept[0]
    fig.canvas.draw()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent()
    bars = [p for p in ax.patches if isinstance(p, Rectangle) and p.get_height() > 0]
    assert len(bars) == 10
    assert not any(legend.overlaps(b.get_window_extent()) for b in bars)
    assert not legend.overlaps(ax.title.get_window_extent())
    plt.close(fig)


def test_real_images_split_and_another_folder(sample_root: Path, corrupt_root: Path,
                                              tmp_path: Path):
    """End to end on real Matek JPEGs: the run's split, then --data of another real folder."""
    rows = [(str(p.relative_to(sample_root)), c) for c in ("BLA", "LYT", "NGS")
            for p in sorted((sample_root / c).rglob("*.jpg"))[:4]]
    run = fake_run(tmp_path / "run", sample_root, {"test": rows})
    result = evaluate_run(run)
    assert result["n"] == 12 and result["per_class"]["LYT"]["support"] == 4
    other = tmp_path / "other"
    for c in ("LYT", "EOS"):
        (other / c).mkdir(parents=True)
        for p in sorted((sample_root / c).rglob("*.jpg"))[-3:]:
            shutil.copy(p, other / c / p.name)
    shutil.copy(corrupt_root / "LYT_19975.jpg", other / "LYT" / "LYT_19975.jpg")
    result = evaluate_run(run, data=other, tta=True)
    assert result["n"] == 3 and result["skipped_classes"] == {"EOS": 3}
    assert [s["path"] for s in result["skipped_files"]] == ["LYT/LYT_19975.jpg"]
    assert result["skipped_files"][0]["status"] in ("suspicious", "unreadable")


def test_plots_need_epoch_rows(tmp_path: Path):
    from hemacnn.evaluation.plots import plot_training_curves

    empty = tmp_path / "metrics.csv"
    empty.write_text("epoch,train_loss\n")
    with pytest.raises(HemacnnError, match="no epoch rows"):
        plot_training_curves(empty, tmp_path / "x.png")
    with pytest.raises(HemacnnError, match="cannot read"):
        plot_training_curves(tmp_path / "missing.csv", tmp_path / "x.png")
