"""The review page in a real headless Chromium (Playwright driving Debian's chromium).

Uploads real cells, reads the classes off the page and checks them against ``predict``,
re-assigns a cell and sees the differential change, downloads the reviewed CSV and feeds it
to ``hemacnn evaluate --data``, uploads a non-image and sees its error, saves a screenshot.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from hemacnn.cli import main
from hemacnn.predict import predict_files

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed "
                                "(apt-get install -y chromium) - cannot drive the page")


@pytest.fixture(scope="module")
def server(trained_run):
    import uvicorn

    from hemacnn.serve.app import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_app(trained_run), host="127.0.0.1", port=port,
                                        log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not srv.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


def test_review_page_end_to_end(server, trained_run, sample_root, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    cells = tmp_path / "cells"
    cells.mkdir()
    picks = [f for c in ("BLA", "LYT", "NGS") for f in sorted((sample_root / c).rglob("*.jpg"))
             [40:42]]
    for f in picks:
        shutil.copy(f, cells / f.name)
    files = sorted(cells.iterdir())
    expected = {Path(r["path"]).name: r["class"]
                for r in predict_files(trained_run, files, review_below=0.7)}
    (tmp_path / "notes.jpg").write_text("not an image")

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1366, "height": 900}, accept_downloads=True)
        page.goto(server)
        expect(page.locator("#model-info")).to_contain_text("BLA — blast")
        page.set_input_files("#file-input", [str(f) for f in files])
        expect(page.locator(".cell")).to_have_count(len(files), timeout=60_000)
        shown = {c.get_attribute("data-file"): c.locator(".pred .code").inner_text()
                 for c in page.locator(".cell").all()}
        assert shown == expected
        assert page.locator(".cell").first.locator(".bar").count() == 3
        for cell in page.locator(".cell").all():  # the class menu and button fit in the card
            card, button = cell.bounding_box(), cell.locator("button.heat").bounding_box()
            assert button["x"] + button["width"] <= card["x"] + card["width"]

        total = page.locator("#differential tr[data-class] .count").all_inner_texts()
        assert sum(map(int, total)) == len(files)
        bla = page.locator('#differential tr[data-class="BLA"] .count')
        before = int(bla.inner_text())
        target = next(c for c in page.locator(".cell").all()
                      if c.locator(".pred .code").inner_text() != "BLA")
        target.locator("select.reassign").select_option("BLA")
        expect(bla).to_have_text(str(before + 1))  # the differential updates at once

        target.locator("button.heat").click()
        expect(target.locator("img.heatmap")).to_have_count(1, timeout=30_000)

        with page.expect_download() as dl:
            page.click("#download")
        csv_path = cells / "reviewed.csv"
        dl.value.save_as(csv_path)
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)

        page.set_input_files("#file-input", [str(tmp_path / "notes.jpg")])
        expect(page.locator("#errors li")).to_contain_text("notes.jpg", timeout=30_000)
        browser.close()

    assert (tmp_path / "page.png").stat().st_size > 10_000
    rows = csv_path.read_text().splitlines()
    assert rows[0] == "path,class,model_class,reviewed_class,probability"
    assert len(rows) == 1 + len(files)
    reviewed = [r for r in rows[1:] if r.split(",")[2] != r.split(",")[3]]
    assert len(reviewed) == 1 and reviewed[0].split(",")[3] == "BLA"
    # the downloaded labels are a dataset: evaluate reads it beside the images
    assert main(["evaluate", str(trained_run), "--data", str(csv_path), "--out",
                 str(tmp_path / "ev")]) == 0
