"""Settings that can be checked cheaply are checked before train scans or caches any image;
one wording for an empty image file everywhere; .gitignore covers what the docs' examples
write."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import httpx
import pytest

from factories import fake_labelled_run, image_folder, tiny_config
from hemacnn.cli import main
from hemacnn.data.datamodule import HemaDataModule
from hemacnn.inference.predict import classify_files
from hemacnn.serve.app import create_app
from liveserver import serving

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def no_scan(monkeypatch):
    def scanned(self):
        raise AssertionError("the data was scanned before the config was checked")

    monkeypatch.setattr(HemaDataModule, "prepare_data", scanned)


@pytest.mark.parametrize(("override", "words"), [
    ("model.name=mobilenet_v9", "unknown model 'mobilenet_v9'"),
    ("model.name=timm/no_such_net", "timm knows no model of that name"),
    ("data.image_size=16", "needs data.image_size >= "),
    ("model.weights=missing.pth", "model.weights missing.pth not found"),
])
def test_train_checks_the_model_before_the_data(tmp_path: Path, capsys, no_scan, override,
                                                words):
    data = image_folder(tmp_path / "data", {"BLA": 2, "LYT": 2})
    cfg = tiny_config(tmp_path / "tiny.yaml", data, data={"classes": ["BLA", "LYT"]})
    assert main(["train", str(cfg), override, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and words in err
    assert not (tmp_path / "run").exists()


def test_an_empty_file_is_worded_alike_in_predict_and_serve(tmp_path: Path):
    run = fake_labelled_run(tmp_path)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    said = classify_files(run, [empty])[0].detail
    with serving(create_app(run)) as url, httpx.Client(base_url=url, timeout=60) as client:
        body = client.post("/api/predict",
                           files=[("files", ("empty.jpg", b"", "image/jpeg"))]).json()
    served = body["errors"][0]["error"]
    assert said == f"{empty}: empty file (0 bytes)" and served == "empty.jpg: empty file (0 bytes)"


def _written_folders() -> set[str]:
    """The top-level output folders the README's and docs' example commands write into
    (``runs/``: train's default), placeholders such as DIR left out."""
    text = (REPO / "README.md").read_text() + "".join(
        p.read_text() for p in (REPO / "docs").glob("*.md"))
    found = set(re.findall(r"--out[ =]([a-z][\w.-]*)/", text))  # --out studies/arch
    found |= set(re.findall(r"--out[ =]([a-z][\w-]*)(?=[\s`])", text))  # --out ens (a folder)
    return found | {"runs"}


def test_gitignore_covers_the_examples_outputs():
    folders = _written_folders()
    assert {"runs", "studies", "cv", "export"} <= folders

    def ignored(path: str) -> bool:
        return subprocess.run(["git", "check-ignore", "-q", "--no-index", path],
                              cwd=REPO).returncode == 0

    for folder in sorted(folders):
        assert ignored(f"{folder}/some-run/metrics.csv"), f"{folder}/ (examples write it)"
    # the package's and configs' own folders of the same names stay tracked
    assert not ignored("src/hemacnn/studies/new_module.py")
    assert not ignored("configs/studies/new.yaml")
