"""A cell with any warning is flagged for review, however confident the model is: in predict's
rows and summary, the differential's flagged share, and the serve API (the same rows)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

import hemacnn.inference.predict as predict_module
import hemacnn.serve.app as app_module
from factories import fake_labelled_run
from hemacnn.cli import main
from hemacnn.data.colour import BatchColour
from hemacnn.serve.app import create_app
from liveserver import serving


@pytest.fixture()
def run_and_cells(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A fake run, one of its own cells and a blank (one-colour) image: a ``blank`` warning."""
    run = fake_labelled_run(tmp_path)
    cell = sorted((tmp_path / "data" / "LYT").glob("*.jpg"))[0]
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(blank)
    return run, cell, blank


def _far(preds, card) -> BatchColour:
    return BatchColour(distance=9.0, mean=[200.0, 60.0, 60.0], far=True)


def test_predict_flags_every_row_with_a_warning(run_and_cells, capsys, monkeypatch):
    run, cell, blank = run_and_cells
    # --review-below 0: no cell is unsure enough to be flagged, so only warnings flag one
    assert main(["predict", str(run), str(cell), str(blank), "--review-below", "0",
                 "--json", "--differential"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = {Path(r["path"]).name: r for r in out["predictions"]}
    assert rows["blank.png"]["warning"] == "blank" and rows["blank.png"]["review"] is True
    assert rows[cell.name]["warning"] == "" and rows[cell.name]["review"] is False
    assert out["differential"]["review_count"] == 1
    assert main(["predict", str(run), str(cell), str(blank), "--review-below", "0"]) == 0
    assert "1 flagged for review, 1 with warnings" in capsys.readouterr().out
    # a batch whose colour is far: every row says colour, so every row is flagged
    monkeypatch.setattr(predict_module, "colour_check", _far)
    assert main(["predict", str(run), str(cell), str(blank), "--review-below", "0",
                 "--json", "--differential"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert all("colour" in r["warning"] and r["review"] is True for r in out["predictions"])
    assert out["differential"]["review_count"] == 2


def test_serve_flags_every_row_with_a_warning(run_and_cells, monkeypatch):
    run, cell, blank = run_and_cells
    files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in (cell, blank)]
    with serving(create_app(run, review_below=0.0)) as url, \
            httpx.Client(base_url=url, timeout=120) as client:
        body = client.post("/api/predict", files=files).json()
        got = {r["file"]: r for r in body["results"]}
        assert got["blank.png"]["review"] is True and got[cell.name]["review"] is False
        assert body["differential"]["review_count"] == 1
        monkeypatch.setattr(app_module, "colour_check", _far)
        body = client.post("/api/predict", files=files).json()
        assert all(r["review"] is True and "colour" in r["warning"] for r in body["results"])
        assert body["differential"]["review_count"] == 2
