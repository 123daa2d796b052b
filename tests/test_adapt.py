"""`hemacnn adapt`: a run adapted to another laboratory's labelled cells (a folder, or the review
page's CSV got over real HTTP), the card's record of where it came from, the adapted run used by
predict/evaluate/export/serve unchanged, bad input as one line with no folder left, Ctrl-C."""

from __future__ import annotations

import csv
import json
import re
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from factories import cli_process, image_folder
from hemacnn.cli import build_parser, main
from hemacnn.inference.checkpoint import model_weights, read_checkpoint
from hemacnn.models.batchnorm import batchnorm_layers
from hemacnn.training.adapt import AdaptRecipe
from liveserver import serving

# "Another laboratory": the tiny run's three classes in other colours.
OTHER_LAB = {"BLA": (150, 90, 60), "LYT": (90, 140, 80), "NGS": (80, 80, 150)}


@pytest.fixture(scope="module")
def other_lab(tmp_path_factory) -> Path:
    return image_folder(tmp_path_factory.mktemp("lab") / "lab2", dict.fromkeys(OTHER_LAB, 6),
                        colours=OTHER_LAB, sd=40, seed=3)


def _adapt(run: Path, labels: Path, out: Path, *extra: str) -> int:
    return main(["adapt", str(run), "--labels", str(labels), "--out", str(out), "--steps", "4",
                 "--no-progress", *extra])


def _predict(run: Path, folder: Path) -> list[dict]:
    from hemacnn.inference.predict import classify_files

    return [{"class": p.code} for p in classify_files(run, sorted(folder.iterdir()))]


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


def test_adapt_from_a_folder_records_its_parent_and_is_used_unchanged(tiny_run, other_lab,
                                                                      tmp_path, capsys):
    out = tmp_path / "adapted"
    assert _adapt(tiny_run, other_lab, out) == 0
    printed = capsys.readouterr().out
    assert "18 labelled cells (BLA 6, LYT 6, NGS 6)" in printed
    card = json.loads((out / "model_card.json").read_text())
    parent = json.loads((tiny_run / "model_card.json").read_text())
    rec = card["adaptation"]
    assert rec["parent"] == str(tiny_run.resolve())
    assert rec["counts"] == {"BLA": 6, "LYT": 6, "NGS": 6}
    assert rec["domain"] == "lab2" and rec["labels"] == str(other_lab.resolve())
    assert len(rec["labels_sha256"]) == 64 and rec["replay_images"] > 0
    assert rec["recipe"]["steps"] == 4 and rec["recipe"]["bn"] == "frozen"
    # the colour check now measures against the new laboratory; the parent's is kept
    assert rec["parent_colour_stats"] == parent["colour_stats"]
    assert card["colour_stats"]["image_mean"] != parent["colour_stats"]["image_mean"]
    assert card["colour_stats"]["images"] == 18
    # the in-domain figure of record is the adapted model's on the parent's test split
    test = json.loads((out / "test_metrics.json").read_text())
    assert card["metrics"]["macro_f1"] == test["macro_f1"] and test["split"] == "test"
    assert str(out) in test["outputs"]["evaluation"] and ".part" not in json.dumps(test)
    assert _leftovers(tmp_path) == []

    # the weights moved, the parent's BatchNorm statistics did not (bn frozen, the default)
    new = model_weights(read_checkpoint(out / "checkpoints" / "best.ckpt")["state_dict"])
    old = model_weights(read_checkpoint(tiny_run / "checkpoints" / "best.ckpt")["state_dict"])
    stats = [k for k in old if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(new[k], old[k]) for k in stats)
    assert any(not torch.equal(new[k], old[k]) for k in old if k.endswith("weight"))

    # predict, evaluate and export take the adapted run as any run
    assert main(["evaluate", str(out), "--data", str(other_lab), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["n"] == 18
    assert main(["predict", str(out), str(other_lab / "BLA"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 6
    # a batch from the new laboratory is near the card's colours: no colour warning now
    assert all("colour" not in (r.get("warning") or "") for r in rows)
    assert main(["export", str(out)]) == 0
    assert "model.onnx" in capsys.readouterr().out
    assert main(["predict", str(out / "export" / "model.onnx"), str(other_lab / "LYT"),
                 "--json"]) == 0
    onnx_rows = json.loads(capsys.readouterr().out)
    assert [r["class"] for r in onnx_rows] == [r["class"] for r in json.loads(
        json.dumps(_predict(out, other_lab / "LYT")))]


def test_adapt_from_the_csv_of_the_reviewing_api_over_http(tiny_run, other_lab, tmp_path):
    """The page's loop over real HTTP: classify with /api/predict (what the page calls), review
    some cells, write the page's CSV beside the images, adapt, then serve the adapted run."""
    import httpx

    from hemacnn.serve.app import create_app

    cells = tmp_path / "cells"
    cells.mkdir()
    for f in sorted(other_lab.rglob("*.jpg")):
        shutil.copy(f, cells / f.name)
    files = sorted(cells.iterdir())
    with serving(create_app(tiny_run)) as url:
        sent = [("files", (f.name, f.read_bytes(), "image/jpeg")) for f in files]
        body = httpx.post(f"{url}/api/predict", files=sent, timeout=120).json()
    # A person confirms or re-assigns 9 cells (the truth is the file name's prefix) and leaves
    # the other 9; the columns are the page's download (app.js downloadCsv).
    rows = [["path", "class", "model_class", "reviewed_class", "probability"]]
    for i, r in enumerate(body["results"]):
        truth = r["file"].split("_")[0]
        reviewed = truth if i % 2 == 0 else ""
        rows.append([r["file"], reviewed or r["class"], r["class"], reviewed,
                     f"{r['probability']:.6f}"])
    csv_path = cells / "reviewed_labels.csv"
    with csv_path.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)

    out = tmp_path / "adapted"
    assert _adapt(tiny_run, csv_path, out, "--domain", "our lab") == 0
    rec = json.loads((out / "model_card.json").read_text())["adaptation"]
    truths = [r["file"].split("_")[0] for i, r in enumerate(body["results"]) if i % 2 == 0]
    assert rec["counts"] == {c: truths.count(c) for c in dict.fromkeys(truths)}
    assert rec["unreviewed"] == 9 and rec["domain"] == "our lab"
    import hashlib

    assert rec["labels_sha256"] == hashlib.sha256(csv_path.read_bytes()).hexdigest()

    with serving(create_app(out)) as url:
        model = httpx.get(f"{url}/api/model", timeout=30).json()
        assert model["adaptation"]["counts"] == rec["counts"]
        sent = [("files", (f.name, f.read_bytes(), "image/jpeg")) for f in files[:3]]
        again = httpx.post(f"{url}/api/predict", files=sent, timeout=120).json()
    assert len(again["results"]) == 3 and not again["colour"]["far"]


def _write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "class", "model_class", "reviewed_class"])
        for name, reviewed in rows:
            w.writerow([name, reviewed or "BLA", "BLA", reviewed])
    return path


def lab_and(tmp: Path, lab: Path) -> Path:
    """The lab's folder with a class folder of a name the model does not know."""
    mixed = tmp / "mixed"
    shutil.copytree(lab, mixed)
    image_folder(mixed, {"platelet": 2})
    return mixed


def _bad_inputs(tmp: Path, lab: Path) -> dict[str, tuple[Path, list[str], str]]:
    csv_dir = tmp / "csv"
    csv_dir.mkdir(parents=True)
    for f in sorted(lab.rglob("*.jpg")):
        shutil.copy(f, csv_dir / f.name)
    names = sorted(p.name for p in csv_dir.iterdir())
    broken = tmp / "broken"
    shutil.copytree(lab, broken)
    (broken / "LYT" / "LYT_000.jpg").write_bytes(b"not a jpeg at all" * 20)
    foreign = image_folder(tmp / "foreign", {"lymphocyte": 3, "neutrophil": 3})
    one = image_folder(tmp / "one", {"BLA": 4})
    empty = tmp / "empty"
    (empty / "BLA").mkdir(parents=True)
    return {
        "no reviewed rows": (_write_csv(csv_dir / "none.csv", [(n, "") for n in names]), [],
                             "no reviewed rows"),
        "classes the model lacks": (foreign, [], "--class-map"),
        "some classes the model lacks": (lab_and(tmp, lab), [], "classes the model lacks"),
        "unreadable image": (broken, [], "LYT_000.jpg"),
        "one class": (one, [], "at least 2 classes"),
        "one reviewed class": (_write_csv(csv_dir / "one.csv", [(names[0], "BLA")]), [],
                               "at least 2 classes"),
        "empty folder": (empty, [], "is empty"),
        "no such labels": (tmp / "nowhere", [], "not found"),
        "bad replay share": (lab, ["--replay", "1.5"], "--replay"),
    }


@pytest.mark.parametrize("case", ["no reviewed rows", "classes the model lacks",
                                  "some classes the model lacks",
                                  "unreadable image", "one class", "one reviewed class",
                                  "empty folder", "no such labels", "bad replay share"])
def test_bad_input_is_one_line_and_leaves_no_folder(tiny_run, other_lab, tmp_path, capsys,
                                                    case):
    labels, extra, words = _bad_inputs(tmp_path / "in", other_lab)[case]
    out = tmp_path / "runs" / "adapted"
    out.parent.mkdir()
    assert _adapt(tiny_run, labels, out, *extra) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and words in err, err
    assert not out.exists() and list(out.parent.iterdir()) == []


def test_a_class_map_takes_the_labs_own_folder_names(tiny_run, tmp_path, capsys):
    lab = image_folder(tmp_path / "pbc", {"lymphocyte": 4, "blast": 4, "platelet": 3},
                       colours={"lymphocyte": (90, 140, 80), "blast": (150, 90, 60)})
    cmap = tmp_path / "map.yaml"
    cmap.write_text("format: hemacnn-classmap/1\nclasses:\n  lymphocyte: [LYT]\n"
                    "  blast: [BLA]\n  platelet: []\n")
    out = tmp_path / "adapted"
    assert _adapt(tiny_run, lab, out, "--class-map", str(cmap)) == 0
    rec = json.loads((out / "model_card.json").read_text())["adaptation"]
    assert rec["counts"] == {"BLA": 4, "LYT": 4} and rec["left_out"] == {"platelet": 3}
    assert rec["class_map"] == str(cmap.resolve())
    assert "left out (no class of the model): platelet (3)" in capsys.readouterr().out


def test_existing_out_is_never_overwritten(tiny_run, other_lab, tmp_path, capsys):
    out = tmp_path / "adapted"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    assert _adapt(tiny_run, other_lab, out) == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "mine.txt").read_text() == "keep"


@pytest.mark.slow  # a real SIGINT to a child process, as the train and sweep kill tests
def test_ctrl_c_leaves_no_run_folder(tiny_run, other_lab, tmp_path):
    out = tmp_path / "adapted"
    proc = cli_process(["adapt", str(tiny_run), "--labels", str(other_lab), "--out", str(out),
                        "--steps", "100000", "--no-progress"],
                       preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = []
    for line in proc.stdout:  # the line said when training starts
        seen.append(line)
        if line.startswith("adapting "):
            break
    proc.send_signal(signal.SIGINT)
    rest = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, "".join(seen) + rest
    assert "adaptation interrupted; no run folder was written" in rest
    assert not out.exists() and _leftovers(tmp_path) == []


def test_cli_defaults_are_the_recipes():
    args = build_parser().parse_args(["adapt", "R", "--labels", "L", "--out", "O"])
    recipe = AdaptRecipe()
    for name in ("steps", "lr", "replay", "l2sp", "bn", "augment", "seed"):
        assert getattr(args, name) == getattr(recipe, name), name


def test_l2sp_pulls_toward_the_parent(tiny_run, other_lab, tmp_path):
    """The same adaptation with a strong L2-SP term ends nearer the parent's weights."""
    def distance(run: Path) -> float:
        new = model_weights(read_checkpoint(run / "checkpoints" / "best.ckpt")["state_dict"])
        old = model_weights(read_checkpoint(tiny_run / "checkpoints" / "best.ckpt")
                            ["state_dict"])
        return float(sum((new[k].float() - old[k].float()).pow(2).sum() for k in old
                         if new[k].is_floating_point()))

    assert _adapt(tiny_run, other_lab, tmp_path / "free", "--steps", "8") == 0
    assert _adapt(tiny_run, other_lab, tmp_path / "held", "--steps", "8", "--l2sp", "10") == 0
    assert distance(tmp_path / "held") < distance(tmp_path / "free")
    assert np.isfinite(distance(tmp_path / "held"))


def test_bn_train_moves_the_statistics(tiny_run, other_lab, tmp_path):
    out = tmp_path / "adapted"
    assert _adapt(tiny_run, other_lab, out, "--bn", "train") == 0
    from hemacnn.inference.loading import load_checkpoint

    new, _ = load_checkpoint(out, prepare=False)
    old, _ = load_checkpoint(tiny_run, prepare=False)
    assert any(not torch.equal(a.running_mean, b.running_mean)
               for a, b in zip(batchnorm_layers(new), batchnorm_layers(old), strict=True))


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow  # a real browser driving the review page of a live server
@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install -y "
                    "chromium) - cannot drive the page")
def test_the_review_pages_download_adapts_the_model(trained_run, sample_root, tmp_path):
    """The loop as a person does it: cells dropped on the page, three reviewed (one per class),
    the CSV downloaded beside the images, `hemacnn adapt` on it, the adapted run served."""
    from playwright.sync_api import expect, sync_playwright

    from hemacnn.serve.app import create_app
    from test_serve_browser import FLAGS

    cells = tmp_path / "cells"
    cells.mkdir()
    for code in ("BLA", "LYT", "NGS"):
        for f in sorted((sample_root / code).rglob("*.jpg"))[:2]:
            shutil.copy(f, cells / f"{code}_{f.name}")
    files = sorted(cells.iterdir())
    with serving(create_app(trained_run)) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(accept_downloads=True)
        page.on("dialog", lambda d: d.accept())
        page.goto(url)
        page.set_input_files("#file-input", [str(f) for f in files])
        expect(page.locator(".cell")).to_have_count(6, timeout=120_000)
        expect(page.locator("#adapt-note")).to_contain_text("hemacnn adapt")
        for code in ("BLA", "LYT", "NGS"):  # the first cell of each class: its true class
            cell = page.locator(f'.cell[data-file^="{code}_"]').first
            cell.locator("select.reassign").select_option(code)
            if cell.locator("button.confirm").is_enabled():
                cell.locator("button.confirm").click()
            expect(cell.locator(".badge.status")).to_have_text(re.compile("confirmed|re-assigned"))
        with page.expect_download() as dl:
            page.click("#download")
        dl.value.save_as(cells / "reviewed_labels.csv")
        browser.close()

    out = tmp_path / "adapted"
    assert _adapt(trained_run, cells / "reviewed_labels.csv", out) == 0
    rec = json.loads((out / "model_card.json").read_text())["adaptation"]
    assert rec["counts"] == {"BLA": 1, "LYT": 1, "NGS": 1} and rec["unreviewed"] == 3
    with serving(create_app(out)) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page()
        page.goto(url)
        expect(page.locator("#model-info")).to_contain_text("adapted to cells on 3 labelled cells")
        browser.close()
