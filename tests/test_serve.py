"""The serve JSON API over real HTTP on real cells: results, differential, limits as 4xx,
decompression bombs, one model load, and a server that answers while it classifies."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import httpx
import pytest
from PIL import Image

import hemacnn.inference.loading as loading_module
from hemacnn.cli import main
from hemacnn.evaluation.evaluate import evaluate_run, format_evaluation
from hemacnn.inference.classifier import load_classifier
from hemacnn.inference.differential import differential, run_confusion
from hemacnn.inference.predict import DEFAULT_REVIEW_BELOW, classify_files
from hemacnn.serve.app import create_app
from liveserver import serving


def huge_png(width: int, height: int) -> bytes:
    """A valid all-black 1-bit PNG of ``width`` x ``height`` px; zeros compress ~1000:1, so
    even 30000 x 30000 px is ~110 KB on disk (the shape of a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    row = b"\0" * (1 + (width + 7) // 8)  # filter byte + packed bits
    z = zlib.compressobj(9)
    data = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grayscale
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data)
            + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def cells(sample_root) -> list[Path]:
    return [f for c in ("BLA", "LYT", "NGS") for f in sorted((sample_root / c).rglob("*.jpg"))
            [30:33]]


@pytest.fixture(scope="module")
def server(trained_run):
    with serving(create_app(trained_run, max_file_bytes=200_000, max_files=12)) as url:
        yield url


@pytest.fixture()
def client(server):
    with httpx.Client(base_url=server, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return huge_png(30000, 30000)


def _files(paths):
    return [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in paths]


def test_predict_api_matches_predict(client, trained_run, cells):
    r = client.post("/api/predict", files=_files(cells))
    assert r.status_code == 200
    body = r.json()
    preds = classify_files(trained_run, cells, review_below=DEFAULT_REVIEW_BELOW)
    assert [x["file"] for x in body["results"]] == [p.name for p in cells]
    assert [x["class"] for x in body["results"]] == [p.code for p in preds]
    first = body["results"][0]
    assert set(first["probabilities"]) == {"BLA", "LYT", "NGS"}
    assert first["probability"] == pytest.approx(max(first["probabilities"].values()))
    assert first["review"] == (first["probability"] < DEFAULT_REVIEW_BELOW)
    d = body["differential"]
    assert d["n_cells"] == 9 and d["rows"][0]["class"] == "BLA"
    assert sum(x["count"] for x in d["rows"]) == 9
    # Adjusted for the model's errors with the run's test confusion, as predict's is.
    expected = differential([p.code for p in preds], ["BLA", "LYT", "NGS"],
                            [p.review for p in preds],
                            confusion=run_confusion(trained_run, load_classifier(trained_run).card))
    assert d["adjustment"]["method"] is not None
    assert [x["adjusted_percent"] for x in d["rows"]] == pytest.approx(
        [x["adjusted_percent"] for x in expected["rows"]])


def test_health_model_card_and_favicon(client):
    assert client.get("/healthz").status_code == 200
    card = client.get("/api/model").json()
    assert card["classes"] == ["BLA", "LYT", "NGS"] and card["input_size"] == 48
    assert card["review_below"] == DEFAULT_REVIEW_BELOW and card["heat_maps"] is True
    assert card["limits"]["max_files"] == 12  # the page splits its uploads by this
    assert "/api/predict" in client.get("/openapi.json").json()["paths"]
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200 and b"<svg" in icon.content


def test_bad_uploads_are_4xx_naming_the_file(client, cells):
    bad = [("files", ("notes.txt", b"hello", "text/plain"))]
    r = client.post("/api/predict", files=bad)
    assert r.status_code == 415 and "notes.txt" in r.json()["detail"]
    r = client.post("/api/predict", files=[("files", ("fake.jpg", b"not a jpeg", "image/jpeg"))])
    assert r.status_code == 422 and "fake.jpg" in r.json()["errors"][0]["error"]
    assert "0000_" not in r.json()["errors"][0]["error"]  # the user's name, not our temp name
    whole = cells[0].read_bytes()
    r = client.post("/api/predict", files=[("files", ("cut.jpg", whole[:2000], "image/jpeg"))])
    assert r.status_code == 422 and "truncated" in r.json()["errors"][0]["error"]
    assert r.json()["errors"][0]["error"].startswith("cut.jpg: ")
    r = client.post("/api/predict", files=[("files", ("empty.jpg", b"", "image/jpeg"))])
    assert r.status_code == 400
    assert r.json()["errors"][0]["error"] == "empty.jpg: empty file (0 bytes)"
    # mixed: the good file is classified, each bad one is a result carrying its error
    r = client.post("/api/predict", files=_files(cells[:1]) + bad)
    assert r.status_code == 200
    results = r.json()["results"]
    assert results[0]["class"] and "error" in results[1] and results[1]["file"] == "notes.txt"


def test_no_files_is_the_documented_400(client):
    for path, field in (("/api/predict", "files"), ("/api/explain", "file")):
        r = client.post(path)
        assert r.status_code == 400, (path, r.text)
        assert f"'{field}'" in r.json()["detail"]


def test_a_decompression_bomb_is_a_422_alone_and_an_error_beside_good_files(client, cells,
                                                                            bomb):
    assert len(bomb) < 200_000  # under the per-file byte limit: only its pixels give it away
    r = client.post("/api/predict", files=[("files", ("bomb.png", bomb, "image/png"))])
    assert r.status_code == 422
    assert r.json()["errors"] == [{"file": "bomb.png", "status": 422,
                                   "error": "bomb.png: too large to decode safely"}]
    r = client.post("/api/predict", files=_files(cells[:2]) + [
        ("files", ("bomb.png", bomb, "image/png"))] + _files(cells[2:4]))
    assert r.status_code == 200
    results = r.json()["results"]
    assert [x["file"] for x in results] == [cells[0].name, cells[1].name, "bomb.png",
                                            cells[2].name, cells[3].name]
    assert results[2]["error"] == "bomb.png: too large to decode safely"
    assert all(x.get("class") for i, x in enumerate(results) if i != 2)
    assert r.json()["differential"]["n_cells"] == 4
    r = client.post("/api/explain", files={"file": ("bomb.png", bomb, "image/png")})
    assert r.status_code == 422 and r.json()["detail"] == "bomb.png: too large to decode safely"


def test_pixels_are_limited_before_decoding(client):
    # 144 megapixels: below Pillow's own bomb limit, so without ours it would be decoded
    # (~1.5 GB resident as RGB); refused from the header alone.
    big = huge_png(12000, 12000)
    r = client.post("/api/predict", files=[("files", ("slide.png", big, "image/png"))])
    assert r.status_code == 422
    error = r.json()["errors"][0]["error"]
    assert error.startswith("slide.png: 12000 x 12000 px") and "50-megapixel limit" in error


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
    answers: list = [None] * 4
    with serving(create_app(trained_run)) as url:
        def ask(i: int) -> None:
            answers[i] = httpx.post(f"{url}/api/predict", files=_files(cells),
                                    timeout=120).json()

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(loads) == 1
    classes = [[x["class"] for x in a["results"]] for a in answers]
    assert all(c == classes[0] for c in classes)


def test_healthz_answers_while_a_client_classifies(trained_run, sample_root):
    many = sorted(sample_root.rglob("*.jpg"))[:200]
    posted: list[int] = []
    waits: list[float] = []
    with serving(create_app(trained_run)) as url:
        def post_repeatedly() -> None:
            with httpx.Client(base_url=url, timeout=300) as c:
                while len(posted) < 3:
                    posted.append(c.post("/api/predict", files=_files(many)).status_code)

        poster = threading.Thread(target=post_repeatedly)
        poster.start()
        with httpx.Client(base_url=url, timeout=30) as c:
            while poster.is_alive():
                start = time.monotonic()
                assert c.get("/healthz").status_code == 200
                waits.append(time.monotonic() - start)
                time.sleep(0.05)
        poster.join()
    assert posted == [200, 200, 200]
    assert len(waits) >= 10  # it really asked during the work
    assert max(waits) < 1.0, f"/healthz waited {max(waits):.2f} s while the model worked"


def test_explain_endpoint_returns_a_png(client, cells):
    r = client.post("/api/explain", files={"file": (cells[0].name, cells[0].read_bytes())},
                    data={"target": "LYT"})
    assert r.status_code == 200 and r.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert r.headers["x-class"] == "LYT" and r.headers["x-method"] == "gradcam"
    assert 0 <= float(r.headers["x-probability"]) <= 1
    # The overlay alone, at the cell's own size: the page captions it (a half of the captioned
    # pair showed the caption cut mid-word, "edicted class)").
    with Image.open(io.BytesIO(r.content)) as png, Image.open(cells[0]) as cell:
        assert png.size == cell.size
    assert "x-map-note" in r.headers
    r = client.post("/api/explain", files={"file": ("a.jpg", b"junk")})
    assert r.status_code == 422 and "a.jpg" in r.json()["detail"]
    r = client.post("/api/explain", files={"file": (cells[0].name, cells[0].read_bytes())},
                    data={"target": "XYZ"})
    assert r.status_code == 422
    assert r.json()["detail"].startswith("target 'XYZ' is not a class of this model")
    assert "--target" not in r.json()["detail"]  # API wording, not the command line's


def test_serve_refuses_a_bad_port_threshold_and_model(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "none.ckpt"), "--port", "0"]) == 2
    assert "--port" in capsys.readouterr().err
    assert main(["serve", str(tmp_path / "none.ckpt"), "--review-below", "1.5"]) == 2
    assert "--review-below must lie in [0, 1]" in capsys.readouterr().err
    assert main(["serve", str(tmp_path / "none.ckpt"), "--port", "8765"]) == 2
    assert "none.ckpt not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    assert f"default: {DEFAULT_REVIEW_BELOW:g}, the same as predict" in " ".join(
        capsys.readouterr().out.split())


def test_starting_the_app_imports_nothing_serving_does_not_need(trained_run):
    # Each of these costs tens to hundreds of MB resident and seconds at start; none of them
    # classifies a cell (heat maps import matplotlib and grad-cam on first use only).
    code = ("import sys; from hemacnn.serve.app import create_app; create_app(sys.argv[1]); "
            "heavy = ['lightning', 'pytorch_lightning', 'matplotlib', 'sklearn', 'scipy', "
            "'torchvision', 'torch._dynamo', 'timm', 'optuna', 'pandas', 'pytorch_grad_cam', "
            "'hemacnn.training.train']; print(','.join(m for m in heavy if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(trained_run)], capture_output=True,
                         text=True, check=True, timeout=300)
    assert out.stdout.strip() == ""


def test_evaluate_scores_only_the_reviewed_rows(trained_run, cells, tmp_path, capsys):
    # reviewed_class empty = nobody looked at the cell: its class is the model's own call
    csv_path = tmp_path / "reviewed.csv"

    def write(reviewed: dict[int, str]) -> None:
        rows = ["path,class,model_class,reviewed_class,probability"]
        for i, p in enumerate(cells[:5]):
            rel = f"{p.parent.name}/{p.name}"
            (tmp_path / p.parent.name).mkdir(exist_ok=True)
            (tmp_path / rel).write_bytes(p.read_bytes())
            rows.append(f"{rel},{reviewed.get(i, 'NGS')},NGS,{reviewed.get(i, '')},0.5")
        csv_path.write_text("\n".join(rows) + "\n")

    write({0: "BLA", 3: "LYT"})
    result = evaluate_run(trained_run, data=csv_path, out=tmp_path / "ev")
    assert result["n"] == 2 and result["skipped_unreviewed"] == 3
    assert "skipped 3 rows nobody reviewed" in format_evaluation(result)
    write({})
    assert main(["evaluate", str(trained_run), "--data", str(csv_path)]) == 2
    assert "no reviewed rows" in capsys.readouterr().err
