"""What predict and explain are given: decompression bombs, non-images, missing paths, bad --out,
and images unlike the training cells (typed warnings), all on a model trained on real cells."""

from __future__ import annotations

import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from factories import read_csv
from hemacnn.cli import main
from hemacnn.data.scan import check_file
from hemacnn.inference.predict import DEFAULT_REVIEW_BELOW, Status, classify_files

CLASSES = ("BLA", "LYT", "NGS")


def bomb_png(path: Path, side: int = 30000) -> Path:
    """A valid 1-bit PNG of side x side px (900 megapixels for 30000) in about 100 KB."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + one bit per pixel
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit grayscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data)
                     + chunk(b"IEND", b""))
    return path


def real_cells(sample_root: Path, dest: Path, per_class: int) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for code in CLASSES:
        for f in sorted((sample_root / code).rglob("*.jpg"))[300:300 + per_class]:
            out.append(Path(shutil.copy(f, dest / f.name)))
    return out



def test_a_decompression_bomb_is_one_error_row_and_the_other_rows_are_written(
        trained_run, sample_root, tmp_path, capsys):
    folder = tmp_path / "cells"
    good = real_cells(sample_root, folder, 15)
    bomb = bomb_png(folder / "bomb.png")
    assert len(good) == 45 and bomb.stat().st_size < 1_000_000
    out = tmp_path / "p.csv"
    assert main(["predict", str(trained_run), str(folder), "--out", str(out)]) == 0
    printed = capsys.readouterr()
    rows = read_csv(out)
    assert len(rows) == 46
    bad = [r for r in rows if r["status"].startswith("error: ")]
    assert [Path(r["path"]).name for r in bad] == ["bomb.png"]
    assert "too large to decode safely" in bad[0]["status"] and bad[0]["class"] == ""
    assert "45 of 46 files classified, 1 failed" in printed.out
    assert "Traceback" not in printed.err

    # the scan's own check of the file, which predict also runs, says the same and never raises
    _, width, _, found = check_file(str(folder), "bomb.png")
    assert width == 0 and found[0][0] == "unreadable" and "too large" in found[0][1]

    maps = tmp_path / "maps"
    assert main(["explain", str(trained_run), str(bomb), "--out", str(maps)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no heat map written") and "too large to decode safely" in err
    assert "Traceback" not in err
    assert main(["explain", str(trained_run), str(good[0]), str(bomb), "--out", str(maps)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "wrote" in lines[0] and "ERROR" in lines[1] and "too large" in lines[1]
    assert (maps / f"{good[0].stem}.gradcam.png").is_file()


def test_folders_give_only_images_and_a_second_run_skips_the_first_ones_output(
        trained_run, sample_root, tmp_path, capsys):
    folder = tmp_path / "cells"
    real_cells(sample_root, folder, 1)
    (folder / "README.md").write_text("# cells of patient 7\n")
    (folder / "report.pdf").write_bytes(b"%PDF-1.4\n%%EOF\n")
    assert main(["predict", str(trained_run), str(folder), "--out", str(folder / "p.csv"),
                 "--differential"]) == 0
    assert "3 of 3 files classified, 0 failed" in capsys.readouterr().out
    assert len(read_csv(folder / "p.csv")) == 3
    # again: its own CSV and the differential's CSV/JSON are no cells either
    assert main(["predict", str(trained_run), str(folder), "--out", str(folder / "q.json")]) == 0
    out = capsys.readouterr().out
    assert "3 of 3 files classified, 0 failed" in out and "5 non-image files skipped" in out
    # globs skip them too; a file named on its own is always tried
    assert main(["predict", str(trained_run), str(folder / "*"), str(folder / "README.md")]) == 0
    out = capsys.readouterr().out
    assert "3 of 4 files classified, 1 failed" in out and "6 non-image files skipped" in out

    only_text = tmp_path / "notes"
    only_text.mkdir()
    for i in range(11):
        (only_text / f"n{i}.{'txt' if i % 2 else 'pdf'}").write_text("text")
    assert main(["predict", str(trained_run), str(only_text)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1
    assert err.startswith(f"error: no image files in {only_text}: 11 non-image files skipped")


def test_out_and_missing_inputs_are_checked_before_any_work(trained_run, sample_root, tmp_path,
                                                            capsys):
    cell = real_cells(sample_root, tmp_path / "cells", 1)[0]
    assert main(["predict", str(trained_run), str(cell), "--out", str(tmp_path / "x.txt")]) == 2
    assert "give a .csv or .json file name" in capsys.readouterr().err
    assert not (tmp_path / "x.txt").exists()
    deep = tmp_path / "no" / "such" / "x.csv"
    assert main(["predict", str(trained_run), str(cell), "--out", str(deep)]) == 2
    err = capsys.readouterr().err
    assert f"folder {deep.parent} does not exist" in err
    assert not (tmp_path / "no").exists()  # nothing created, not even the first folder
    missing = tmp_path / "missing" / "folder"
    assert main(["predict", str(trained_run), str(missing)]) == 2
    out, err = capsys.readouterr()
    assert f"{missing}: no such file or folder" in out and "cannot read image" not in out
    assert err.startswith("error: no input file could be classified")


def test_review_threshold_defaults_to_the_one_serve_uses(trained_run, sample_root, tmp_path,
                                                        capsys):
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    assert f"default: {DEFAULT_REVIEW_BELOW}" in " ".join(capsys.readouterr().out.split())
    assert DEFAULT_REVIEW_BELOW == 0.7
    folder = tmp_path / "cells"
    real_cells(sample_root, folder, 10)
    out = tmp_path / "p.csv"
    assert main(["predict", str(trained_run), str(folder), "--out", str(out),
                 "--differential"]) == 0
    rows = read_csv(out)
    flagged = [r["review"] == "True" for r in rows]
    assert flagged == [float(r["probability"]) < DEFAULT_REVIEW_BELOW for r in rows]
    assert any(flagged)  # the barely trained test model is unsure of some cells
    printed = capsys.readouterr().out
    assert f"flagged for review: {sum(flagged)} " in printed


def _unlike_training(cell: Path, folder: Path) -> dict[str, Path]:
    """One file per way an input can differ from the 250 px 8-bit RGB training cells."""
    folder.mkdir()
    rgb = Image.open(cell).convert("RGB")
    files = {"ok": Path(shutil.copy(cell, folder / "clean.jpg"))}
    files["grey"] = folder / "grey.png"
    rgb.convert("L").save(files["grey"])
    files["cmyk"] = folder / "cmyk.jpg"
    rgb.convert("CMYK").save(files["cmyk"], quality=95)
    files["16bit"] = folder / "deep.png"
    deep = np.asarray(rgb.convert("L"), dtype=np.uint16) * 257
    Image.fromarray(deep).save(files["16bit"])
    # PNG: an upscaled JPEG would also (rightly) trip the JPEG damage check with its flat blocks
    files["huge"] = folder / "huge.png"
    rgb.resize((4000, 4000), Image.NEAREST).save(files["huge"], compress_level=1)
    files["blank"] = folder / "blank.png"
    Image.new("RGB", (250, 250), (205, 150, 190)).save(files["blank"])
    return files


def test_inputs_unlike_the_training_cells_come_back_with_typed_warnings(trained_run, sample_root,
                                                                       tmp_path, capsys):
    cell = sorted((sample_root / "LYT").rglob("*.jpg"))[40]
    files = _unlike_training(cell, tmp_path / "in")
    out = tmp_path / "p.csv"
    assert main(["predict", str(trained_run), *map(str, files.values()), "--out", str(out)]) == 0
    rows = {Path(r["path"]).name: r for r in read_csv(out)}
    warning = {name: r["warning"] for name, r in rows.items()}
    assert warning == {"clean.jpg": "", "grey.png": "mode", "cmyk.jpg": "mode",
                       "deep.png": "mode", "huge.png": "size", "blank.png": "blank"}
    assert rows["clean.jpg"]["status"] == "ok"
    for name in ("grey.png", "cmyk.jpg", "deep.png", "huge.png", "blank.png"):
        assert rows[name]["status"].startswith("suspicious: ") and rows[name]["class"], name
    assert "grayscale" in rows["grey.png"]["status"] and "CMYK" in rows["cmyk.jpg"]["status"]
    assert "16-bit" in rows["deep.png"]["status"]
    assert "4000x4000 px, far from the training images' 250x250 px" in rows["huge.png"]["status"]
    assert "5 with warnings" in capsys.readouterr().out

    # the library's result is typed: an enum status and the concerns, no text to parse
    preds = classify_files(trained_run, [files["ok"], files["huge"], tmp_path / "gone.jpg"])
    assert [p.status for p in preds] == [Status.OK, Status.SUSPICIOUS, Status.ERROR]
    assert [w.concern.value for w in preds[1].warnings] == ["size"]


def test_a_card_without_the_training_image_size_still_checks_mode_and_colour(
        trained_run, sample_root, tmp_path):
    ckpt = torch.load(trained_run / "checkpoints" / "best.ckpt", weights_only=False)
    assert ckpt["hyper_parameters"]["card"].pop("source_images") == {
        "typical_size": [250, 250], "rgb_8bit": True}
    old = tmp_path / "old.ckpt"
    torch.save(ckpt, old)
    cell = sorted((sample_root / "LYT").rglob("*.jpg"))[40]
    files = _unlike_training(cell, tmp_path / "in")
    preds = classify_files(old, list(files.values()))
    concerns = [[w.concern.value for w in p.warnings] for p in preds]
    assert concerns == [[], ["mode"], ["mode"], ["mode"], [], ["blank"]]
