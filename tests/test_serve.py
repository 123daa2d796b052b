"""The serve JSON API on real cells: results, differential, limits as 4xx, one model load."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import hemacnn.loading as loading_module
from hemacnn.cli import main
from hemacnn.predict import predict_files
from hemacnn.serve.app import create_app


@pytest.fixture(scope="module")
def cells(sample_root) -> list[Path]:
    return [f for c in ("BLA", "LYT", "NGS") for f in sorted((sample_root / c).rglob("*.jpg"))
            [30:33]]


@pytest.fixture(scope="module")
def client(trained_run):
    return TestClient(create_app(trained_run, max_file_bytes=200_000, max_files=12))


def _files(paths):
    return [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in paths]


def test_predict_api_matches_predict(client, trained_run, cells):
    r = client.post("/api/predict", files=_files(cells))
    assert r.status_code == 200
    body = r.json()
    rows = predict_files(trained_run, cells, review_below=0.7)
    assert [x["file"] for x in body["results"]] == [p.name for p in cells]
    assert [x["class"] for x in body["results"]] == [r["class"] for r in rows]
    first = body["results"][0]
    assert set(first["probabilities"]) == {"BLA", "LYT", "NGS"}
    assert first["probability"] == pytest.approx(max(first["probabilities"].values()))
    assert first["review"] == (first["probability"] < 0.7)
    d = body["differential"]
    assert d["n_cells"] == 9 and d["rows"][0]["class"] == "BLA"
    assert sum(x["count"] for x in d["rows"]) == 9


def test_health_and_model_card(client):
    assert client.get("/healthz").status_code == 200
    card = client.get("/api/model").json()
    assert card["classes"] == ["BLA", "LYT", "NGS"] and card["input_size"] == 48
    assert "/api/predict" in client.get("/openapi.json").json()["paths"]


def test_bad_uploads_are_4xx_naming_the_file(client, cells):
    bad = [("files", ("notes.txt", b"hello", "text/plain"))]
    r = client.post("/api/predict", files=bad)
    assert r.status_code == 415 and "notes.txt" in r.json()["detail"]
    r = client.post("/api/predict", files=[("files", ("fake.jpg", b"not a jpeg", "image/jpeg"))])
    assert r.status_code == 422 and "fake.jpg" in r.json()["errors"][0]["error"]
    assert "0000_" not in r.json()["errors"][0]["error"]  # the user's name, not our temp name
    whole = cells[0].read_bytes()
    r = client.post("/api/predict", files=[("files", ("cut.jpg", whole[:2000], "image/jpeg"))])
    assert r.status_code == 422
    r = client.post("/api/predict", files=[("files", ("empty.jpg", b"", "image/jpeg"))])
    assert r.status_code == 400 and "empty.jpg is empty" in r.json()["detail"] + str(r.json())
    assert client.post("/api/predict").status_code == 422  # no files field at all
    # mixed: the good file is classified, each bad one is a result carrying its error
    r = client.post("/api/predict", files=_files(cells[:1]) + bad)
    assert r.status_code == 200
    results = r.json()["results"]
    assert results[0]["class"] and "error" in results[1] and results[1]["file"] == "notes.txt"


def test_limits_give_413(client, cells):
    big = ("files", ("big.jpg", b"\xff\xd8" + b"0" * 300_000, "image/jpeg"))
    r = client.post("/api/predict", files=[big])
    assert r.status_code == 413 and "big.jpg" in r.json()["detail"]
    r = client.post("/api/predict", files=_files(cells) * 2)  # 18 files > 12
    assert r.status_code == 413 and "limit is 12" in r.json()["detail"]


def test_concurrent_requests_share_one_model(trained_run, cells, monkeypatch):
    loads = []
    real = loading_module.load_checkpoint
    monkeypatch.setattr(loading_module, "load_checkpoint",
                        lambda *a, **k: loads.append(a) or real(*a, **k))
    client = TestClient(create_app(trained_run))
    answers: list = [None] * 4

    def ask(i: int) -> None:
        answers[i] = client.post("/api/predict", files=_files(cells)).json()

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(loads) == 1
    classes = [[x["class"] for x in a["results"]] for a in answers]
    assert all(c == classes[0] for c in classes)


def test_explain_endpoint_returns_a_png(client, cells):
    r = client.post("/api/explain", files={"file": (cells[0].name, cells[0].read_bytes())},
                    data={"target": "LYT"})
    assert r.status_code == 200 and r.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert r.headers["x-class"] == "LYT"
    r = client.post("/api/explain", files={"file": ("a.jpg", b"junk")})
    assert r.status_code == 422 and "a.jpg" in r.json()["detail"]


def test_serve_refuses_a_bad_port_and_a_bad_model(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "none.ckpt"), "--port", "0"]) == 2
    assert "--port" in capsys.readouterr().err
    assert main(["serve", str(tmp_path / "none.ckpt"), "--port", "8765"]) == 2
    assert "none.ckpt not found" in capsys.readouterr().err
