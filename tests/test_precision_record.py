"""One model, one set of numbers: every command that computes probabilities takes --precision
(fp32 by default), and every output says what ran (precision, backend and version, device).

This CPU family (AVX-512 BF16) computes bf16 natively, so bf16 and fp32 probabilities differ
here visibly; elsewhere the bf16 runs are still recorded as bf16 (emulated, same records).
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import onnxruntime
import pytest
import torch
from fastapi.testclient import TestClient

from hemacnn.cli import build_parser, main
from hemacnn.inference.engine import PRECISIONS, bf16_native, resolve_precision
from hemacnn.serve.app import create_app

FIELDS = ("precision", "backend", "backend_version", "device")


def _evaluation(folder: Path, name: str) -> dict:
    return json.loads((folder / f"evaluation_{name}.json").read_text())


def test_every_probability_command_has_the_same_precision_option():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # noqa: SLF001 - argparse's own
    for name in ("evaluate", "predict", "explain", "serve"):
        option = next(a for a in commands[name]._actions if "--precision" in a.option_strings)
        assert option.default == "fp32" and sorted(option.choices) == sorted(PRECISIONS)
        assert option.help == next(a for a in commands["predict"]._actions
                                   if "--precision" in a.option_strings).help


def test_evaluate_records_the_precision_it_ran_in(tiny_run: Path, tmp_path: Path, capsys):
    assert json.loads((tiny_run / "test_metrics.json").read_text())["inference"] == {
        "precision": "fp32", "backend": "torch", "backend_version": torch.__version__,
        "device": "cpu"}  # the end-of-training test: fp32 whatever trained
    assert main(["evaluate", str(tiny_run), "--out", str(tmp_path)]) == 0
    assert "fp32 · torch" in capsys.readouterr().out
    assert main(["evaluate", str(tiny_run), "--out", str(tmp_path), "--precision", "bf16"]) == 0
    assert "bf16 · torch" in capsys.readouterr().out
    fp32, bf16 = _evaluation(tmp_path, "test"), _evaluation(tmp_path, "test_bf16")
    assert fp32["inference"]["precision"] == "fp32" and fp32["inference"]["backend"] == "torch"
    assert bf16["inference"]["precision"] == "bf16" and bf16["inference"]["device"] == "cpu"
    if bf16_native(torch.device("cpu")):  # the bf16 file really holds other numbers
        import numpy as np

        p32, p16 = (np.load(tmp_path / f"predictions_{n}.npz")["probs"]
                    for n in ("test", "test_bf16"))
        assert np.abs(p32 - p16).max() > 1e-4
    # auto: what it resolved to, never "auto"
    auto = tmp_path / "auto"
    assert main(["evaluate", str(tiny_run), "--out", str(auto), "--precision", "auto",
                 "--json"]) == 0
    ran = json.loads(capsys.readouterr().out)["inference"]["precision"]
    assert ran == resolve_precision("auto", torch.device("cpu"))


@pytest.fixture(scope="module")
def exported_tiny(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny run with its default ONNX export."""
    run = tmp_path_factory.mktemp("exported") / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("export"))
    assert main(["export", str(run)]) == 0
    return run


@pytest.fixture(scope="module")
def cells(synthetic_root: Path) -> list[Path]:
    """One image of each class the tiny run was trained on."""
    return [sorted((synthetic_root / c).glob("*.jpg"))[0] for c in ("BLA", "LYT", "NGS")]


def test_predict_through_the_export_records_onnxruntime(exported_tiny: Path, cells: list[Path],
                                                        tmp_path: Path, capsys):
    cells = [str(c) for c in cells]
    assert main(["predict", str(exported_tiny), *cells, "--out", str(tmp_path / "p.csv")]) == 0
    assert f"onnxruntime {onnxruntime.__version__}" in capsys.readouterr().out
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert {tuple(r[k] for k in FIELDS) for r in rows} == {
        ("fp32", "onnxruntime", onnxruntime.__version__, "cpu")}
    assert main(["predict", str(exported_tiny), *cells, "--out", str(tmp_path / "p.json"),
                 "--differential"]) == 0
    capsys.readouterr()
    rows = json.loads((tmp_path / "p.json").read_text())
    assert rows[0]["backend"] == "onnxruntime" and rows[0]["precision"] == "fp32"
    diff = json.loads((tmp_path / "p.differential.json").read_text())
    assert diff["inference"]["backend"] == "onnxruntime"
    # bf16 needs the checkpoint: the run predicts through torch, and says so
    assert main(["predict", str(exported_tiny), *cells, "--json", "--precision", "bf16"]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert (row["backend"], row["precision"]) == ("torch", "bf16")
    # the export itself runs only in fp32: asking it for bf16 is an error, not a silent fp32
    onnx = exported_tiny / "export" / "model.onnx"
    assert main(["predict", str(onnx), *cells, "--precision", "bf16"]) == 2
    assert "--precision bf16 needs the checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_predict_explain_and_the_page_show_the_same_probability(tiny_run: Path, cells: list[Path],
                                                               tmp_path: Path, capsys,
                                                               precision: str):
    cell = cells[1]
    assert main(["predict", str(tiny_run), str(cell), "--json", "--precision", precision]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert row["precision"] == precision
    assert main(["explain", str(tiny_run), str(cell), "--out", str(tmp_path),
                 "--precision", precision]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[1:3] == [row["class"], f"{row['probability']:.3f}"]
    assert lines[-1].startswith(f"probabilities computed with {precision} · torch")

    client = TestClient(create_app(tiny_run, precision=precision))
    assert client.get("/api/model").json()["inference"] == {k: row[k] for k in FIELDS}
    body = client.post("/api/predict", files=[("files", (cell.name, cell.read_bytes(),
                                                         "image/jpeg"))]).json()
    assert body["inference"] == {k: row[k] for k in FIELDS}
    shown = body["results"][0]
    assert shown["class"] == row["class"]
    assert shown["probability"] == pytest.approx(row["probability"], abs=1e-6)
    heat = client.post("/api/explain", files={"file": (cell.name, cell.read_bytes(),
                                                      "image/jpeg")})
    assert heat.status_code == 200 and heat.headers["x-precision"] == precision
    assert heat.headers["x-class"] == row["class"]
    assert float(heat.headers["x-probability"]) == pytest.approx(row["probability"], abs=1e-4)

