"""Make docs/serve.png: the review page of `hemacnn serve` with real cells, in headless Chromium.

    python docs/serve_screenshot.py RUN_DIR CELL_IMAGE ... [--out docs/serve.png]

Starts the app on a free localhost port, uploads the images through the page's file input,
opens the heat map of the first cell, re-assigns the last cell to BLA (so the review
highlight shows) and saves a screenshot.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import threading
import time
from pathlib import Path

import uvicorn
from playwright.sync_api import expect, sync_playwright

from hemacnn.serve.app import create_app

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument("--out", type=Path, default=Path(__file__).with_name("serve.png"))
    args = p.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(args.run), host="127.0.0.1", port=port,
                                           log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=shutil.which("chromium"), args=FLAGS)
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        page.goto(f"http://127.0.0.1:{port}")
        page.set_input_files("#file-input", [str(f) for f in args.images])
        expect(page.locator(".cell")).to_have_count(len(args.images), timeout=120_000)
        first = page.locator(".cell").first
        first.locator("button.heat").click()
        expect(first.locator("img.heatmap")).to_have_count(1, timeout=60_000)
        last = page.locator(".cell").last
        last.locator("select.reassign").select_option("BLA")
        page.screenshot(path=str(args.out), full_page=False)
        browser.close()
    server.should_exit = True
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
