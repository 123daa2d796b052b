"""The review page in a real headless Chromium (Playwright driving Debian's chromium).

One browser session: 250 real cells uploaded (more than the server takes in one request) and
checked against ``predict``; a repeat upload counted once; one flagged cell confirmed and one
re-assigned, with the badges, the flagged count and the differential following; a labelled
heat map; a reload that keeps the review (after the unsaved-work warning); the downloaded CSV
scored by ``hemacnn evaluate --data`` on exactly the two reviewed cells; Clear after a
confirmation; a non-image's error; and an ONNX-backed server that hides the heat-map button.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from hemacnn.cli import main
from hemacnn.evaluation.evaluate import evaluate_run
from hemacnn.inference.predict import DEFAULT_REVIEW_BELOW, classify_files
from liveserver import serving

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
N_CELLS = 250  # a manual differential is 200-500 cells; the server takes 200 per request

pytestmark = [pytest.mark.slow,  # a real browser driving the page of a live server
              pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed "
                                 "(apt-get install -y chromium) - cannot drive the page")]


@pytest.fixture(scope="module")
def server(trained_run):
    from hemacnn.serve.app import create_app

    with serving(create_app(trained_run)) as url:
        yield url


@pytest.fixture(scope="module")
def onnx_server(trained_run, tmp_path_factory):
    from hemacnn.serve.app import create_app

    out = tmp_path_factory.mktemp("export")
    assert main(["export", str(trained_run), "--format", "onnx", "--out", str(out)]) == 0
    with serving(create_app(out / "model.onnx")) as url:
        yield url


def _counts(page) -> dict[str, int]:
    rows = page.locator("#differential tr[data-class]")
    return {r.get_attribute("data-class"): int(r.locator(".count").inner_text())
            for r in rows.all()}


def test_review_page_end_to_end(server, onnx_server, trained_run, sample_root, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    cells = tmp_path / "cells"
    cells.mkdir()
    per_class = -(-N_CELLS // 3)
    picks = [f for c in ("BLA", "LYT", "NGS")
             for f in sorted((sample_root / c).rglob("*.jpg"))[:per_class]][:N_CELLS]
    for f in picks:
        shutil.copy(f, cells / f.name)
    files = sorted(cells.iterdir())
    assert len(files) == N_CELLS
    expected = {Path(p.path).name: (p.code, p.review)
                for p in classify_files(trained_run, files, review_below=DEFAULT_REVIEW_BELOW)}
    (tmp_path / "notes.jpg").write_text("not an image")

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1366, "height": 900}, accept_downloads=True)
        dialogs: list[str] = []

        def answer(dialog) -> None:  # accept: leave the page, clear the review
            dialogs.append(dialog.type)
            dialog.accept()

        page.on("dialog", answer)
        failed_gets: list[str] = []
        page.on("response", lambda r: r.request.method == "GET" and r.status >= 400
                and failed_gets.append(f"{r.status} {r.url}"))
        page.goto(server)
        expect(page.locator("#model-info")).to_contain_text("BLA — blast")
        # how the probabilities are computed, named beside the model (fp32 by default)
        expect(page.locator("#model-info")).to_contain_text("probabilities in fp32 · ")

        # 250 cells: the page sends them in batches the server accepts
        page.set_input_files("#file-input", [str(f) for f in files])
        expect(page.locator(".cell")).to_have_count(N_CELLS, timeout=300_000)
        expect(page.locator("#status")).to_have_text(
            f"Classified {N_CELLS} of {N_CELLS} image(s).")
        assert page.locator("#errors li").count() == 0
        shown = {c.get_attribute("data-file"): c.locator(".pred .code").inner_text()
                 for c in page.locator(".cell").all()}
        assert shown == {name: cls for name, (cls, _) in expected.items()}
        assert sum(_counts(page).values()) == N_CELLS
        card = page.locator(".cell").first
        assert card.locator(".bar").count() == 3
        box, heat = card.bounding_box(), card.locator("button.heat").bounding_box()
        assert heat["x"] + heat["width"] <= box["x"] + box["width"]  # the row fits the card

        # the same files again are recognised by content and not counted twice
        page.set_input_files("#file-input", [str(f) for f in files[:2]])
        expect(page.locator("#status")).to_contain_text("2 already on the page")
        expect(page.locator(".cell")).to_have_count(N_CELLS)

        # a person acts: confirm one flagged cell, re-assign another cell to BLA
        flagged = sum(review for _, review in expected.values())
        assert flagged >= 1, "the test model flags no cell; cannot test confirming one"
        summary = page.locator("#diff-summary")
        expect(summary).to_contain_text(f"{flagged} flagged for review, {flagged} still open")
        confirmed_name = page.locator(".cell:has(.badge.review)").first.get_attribute("data-file")
        confirmed = page.locator(f'.cell[data-file="{confirmed_name}"]')
        confirmed.locator("button.confirm").click()
        expect(confirmed.locator(".badge.status")).to_have_text("confirmed")
        expect(summary).to_contain_text(f"{flagged - 1} still open")
        before = _counts(page)
        target = next(c for c in page.locator(".cell").all()
                      if c.locator(".pred .code").inner_text() != "BLA"
                      and c.get_attribute("data-file") != confirmed_name)
        target_name, target_class = (target.get_attribute("data-file"),
                                     target.locator(".pred .code").inner_text())
        target.locator("select.reassign").select_option("BLA")
        expect(target.locator(".badge.status")).to_have_text("re-assigned")
        expect(summary).to_contain_text("1 re-assigned, 1 confirmed")
        after = {**before, "BLA": before["BLA"] + 1, target_class: before[target_class] - 1}
        assert _counts(page) == after  # the differential follows at once
        expect(page.locator("#saved")).to_contain_text("Review saved in this browser")

        # heat map with its class, probability, method and colour scale in view
        target.locator("button.heat").click()
        expect(target.locator("img.heatmap")).to_have_count(1, timeout=60_000)
        expect(target.locator(".heat-label")).to_contain_text("Grad-CAM for")
        assert "%" in target.locator(".heat-label").inner_text()
        expect(target.locator(".heat-label .ramp")).to_be_visible()
        # The picture is the overlay alone, the cell's size: no caption strip drawn into it to
        # be cut (half of the captioned pair read "edicted class)"); the page's own caption is
        # whole: not clipped, and inside the card.
        sizes = target.locator(".imgs img").evaluate_all(
            "els => els.map(e => [e.naturalWidth, e.naturalHeight])")
        assert len(sizes) == 2 and sizes[1] == sizes[0], sizes
        caption = target.locator(".heat-text")
        assert caption.evaluate("e => e.scrollWidth <= e.clientWidth && "
                                "e.scrollHeight <= e.clientHeight")
        box, text = target.bounding_box(), caption.bounding_box()
        assert box["x"] <= text["x"] and text["x"] + text["width"] <= box["x"] + box["width"]
        assert text["y"] + text["height"] <= box["y"] + box["height"]
        target.screenshot(path=str(tmp_path / "heat_cell.png"))
        page.screenshot(path=str(tmp_path / "page.png"), full_page=False)

        # a reload warns (review not downloaded yet) and keeps the review
        page.reload()
        assert dialogs == ["beforeunload"]
        expect(page.locator(".cell")).to_have_count(N_CELLS, timeout=60_000)
        expect(page.locator(f'.cell[data-file="{target_name}"] .badge.status')
               ).to_have_text("re-assigned")
        expect(page.locator(f'.cell[data-file="{confirmed_name}"] .badge.status')
               ).to_have_text("confirmed")
        expect(summary).to_contain_text("1 re-assigned, 1 confirmed")
        assert _counts(page) == after

        with page.expect_download() as dl:
            page.click("#download")
        csv_path = cells / "reviewed.csv"
        dl.value.save_as(csv_path)

        page.click("#clear")  # asks first (accepted here), then empties page and storage
        assert dialogs == ["beforeunload", "confirm"]
        expect(page.locator(".cell")).to_have_count(0)

        page.set_input_files("#file-input", [str(tmp_path / "notes.jpg")])
        expect(page.locator("#errors li")).to_contain_text("notes.jpg", timeout=30_000)
        assert failed_gets == []  # no 404 for the favicon or anything else the page loads

        # an ONNX-backed server cannot draw heat maps: no button that would only get a 409
        page.goto(onnx_server)
        page.set_input_files("#file-input", [str(files[0])])
        expect(page.locator(".cell")).to_have_count(1, timeout=60_000)
        expect(page.locator(".cell button.heat")).to_be_hidden()
        browser.close()

    assert (tmp_path / "page.png").stat().st_size > 10_000
    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == N_CELLS
    assert {r["precision"] for r in rows} == {"fp32"} and all(r["backend"] for r in rows)
    reviewed = {r["path"]: r["reviewed_class"] for r in rows if r["reviewed_class"]}
    assert reviewed == {target_name: "BLA", confirmed_name: expected[confirmed_name][0]}
    # the downloaded labels are a dataset: evaluate scores exactly the two reviewed cells
    result = evaluate_run(trained_run, data=csv_path, out=tmp_path / "ev")
    assert result["n"] == 2 and result["skipped_unreviewed"] == N_CELLS - 2
