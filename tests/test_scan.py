"""`hemacnn scan` and the scan library: real sample counts, every bad input, the manifest cache."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import hemacnn.data.scan as scan_mod
from hemacnn.cli import main
from hemacnn.data.manifest import read_manifest
from hemacnn.data.scan import (
    default_manifest_path,
    load_or_scan,
    scan_dataset,
    scan_report_json,
    scan_report_text,
)
from hemacnn.errors import HemacnnError

SAMPLE_COUNTS = {"BLA": 330, "LYT": 345, "EOS": 334, "MON": 335, "NGB": 1, "NGS": 317,
                 "NIF": 350, "PMO": 258, "ART": 170}


def _cell(seed: int, size: tuple[int, int] = (64, 64)) -> np.ndarray:
    """A smooth, noisy RGB picture (a JPEG of it looks like a micrograph to the pixel check)."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = 150 + 60 * np.sin(xx / 9.0 + seed) * np.cos(yy / 11.0)
    arr = base[..., None] + rng.normal(0, 6, (h, w, 3)) + np.array([10, -20, 30])
    return np.clip(arr, 0, 255).astype(np.uint8)


def _jpeg(path: Path, seed: int, size: tuple[int, int] = (64, 64)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_cell(seed, size)).save(path, "JPEG", quality=92)
    return path


def _dataset(root: Path, per_class: int = 3, classes=("AAA", "BBB")) -> Path:
    for ci, c in enumerate(classes):
        for i in range(per_class):
            _jpeg(root / c / f"{c}_{i:03d}.jpg", seed=100 * ci + i)
    return root


def _by_path(result) -> dict:
    return {e.path: e for e in result.entries}


def _run(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(["scan", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


# --- the real sample --------------------------------------------------------------------------

def test_cli_json_on_sample_gives_exact_counts(sample_root: Path, capsys, tmp_path) -> None:
    out_csv = tmp_path / "m" / "manifest.csv"
    rc, out, _ = _run(capsys, str(sample_root), "--json", "--out", str(out_csv), "--workers", "2")
    assert rc == 0
    report = json.loads(out)
    assert report["total"] == 2440
    assert {c: v["count"] for c, v in report["classes"].items()} == SAMPLE_COUNTS
    assert report["classes"]["BLA"]["percent"] == round(100 * 330 / 2440, 2)
    assert report["problems"] == []
    entries = read_manifest(out_csv)
    assert len(entries) == 2440 and {e.status for e in entries} == {"ok"}
    assert all(e.width == e.height == 250 and len(e.sha1) == 40 for e in entries)
    assert entries[0].path.startswith("ART/0001-1000/ART_")  # relative POSIX, sorted


def test_text_report_on_sample_compares_with_paper(sample_root: Path) -> None:
    result = scan_dataset(sample_root, workers=2, progress=False)
    text = scan_report_text(result, manifest_path=Path("/x/manifest.csv"))
    assert "blast" in text and "segmented neutrophil" in text
    assert "11,973" in text  # the paper's BLA count beside the sample's 330
    assert "Problems: none" in text
    assert "Manifest written to /x/manifest.csv" in text


def test_real_corrupt_files_are_suspicious(corrupt_root: Path, capsys, tmp_path) -> None:
    rc, out, _ = _run(capsys, str(corrupt_root), "--json", "--out", str(tmp_path / "m.csv"))
    assert rc == 2  # nothing in the folder is usable
    report = json.loads(out)
    assert report["total"] == 4
    assert sorted(p["kind"] for p in report["problems"]) == ["suspicious"] * 4


def test_scan_does_not_import_torch(sample_root: Path, tmp_path) -> None:
    code = ("import sys; from hemacnn.cli import main; "
            f"main(['scan', {str(sample_root / 'NGB')!r}, '--json', '--out', "
            f"{str(tmp_path / 'm.csv')!r}]); print('torch' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip().splitlines()[-1] == "False"


# --- layouts and litter -----------------------------------------------------------------------

def test_matek_nested_and_flat_layouts(tmp_path: Path) -> None:
    _jpeg(tmp_path / "BLA" / "0001-1000" / "BLA_00001.jpg", 1)
    _jpeg(tmp_path / "BLA" / "1001-2000" / "BLA_01001.jpg", 2)
    _jpeg(tmp_path / "LYT" / "LYT_00001.JPEG", 3)  # flat, upper-case extension
    result = scan_dataset(tmp_path, workers=1, progress=False)
    assert {e.path: e.label for e in result.entries} == {
        "BLA/0001-1000/BLA_00001.jpg": "BLA", "BLA/1001-2000/BLA_01001.jpg": "BLA",
        "LYT/LYT_00001.JPEG": "LYT"}
    assert result.class_counts == {"BLA": 2, "LYT": 1}


def test_every_listed_format_in_any_case_is_scanned(tmp_path: Path) -> None:
    for i, (name, fmt) in enumerate([("a.TIF", "TIFF"), ("b.tiff", "TIFF"), ("c.Bmp", "BMP"),
                                     ("d.PNG", "PNG"), ("e.jpeg", "JPEG")]):
        (tmp_path / "AAA").mkdir(exist_ok=True)
        Image.fromarray(_cell(i)).save(tmp_path / "AAA" / name, fmt)
    (tmp_path / "AAA" / "f.gif").write_bytes(b"GIF89a")
    result = scan_dataset(tmp_path, workers=1, progress=False)
    assert {e.path: e.status for e in result.entries} == {
        f"AAA/{n}": "ok" for n in ("a.TIF", "b.tiff", "c.Bmp", "d.PNG", "e.jpeg")}
    assert [(p["path"], p["kind"]) for p in result.problems] == [("AAA/f.gif", "skipped")]


def test_hidden_files_and_os_litter_are_ignored(tmp_path: Path) -> None:
    _dataset(tmp_path, per_class=2)
    (tmp_path / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (tmp_path / "AAA" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (tmp_path / "AAA" / "Thumbs.db").write_bytes(b"junk")
    (tmp_path / "AAA" / "._AAA_000.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    _jpeg(tmp_path / "__MACOSX" / "AAA" / "x.jpg", 5)
    _jpeg(tmp_path / ".hidden" / "y.jpg", 6)
    _jpeg(tmp_path / "BBB" / ".cache" / "z.jpg", 7)
    result = scan_dataset(tmp_path, workers=1, progress=False)
    assert result.total == 4
    assert set(result.class_counts) == {"AAA", "BBB"}
    assert result.problems == []


def test_loose_files_in_root_are_ignored_and_reported(tmp_path: Path) -> None:
    _dataset(tmp_path, per_class=1)
    _jpeg(tmp_path / "stray.jpg", 9)
    result = scan_dataset(tmp_path, workers=1, progress=False)
    assert "stray.jpg" not in _by_path(result)
    assert [p["kind"] for p in result.problems if p["path"] == "stray.jpg"] == ["no-class-folder"]


def test_folder_of_images_without_class_folders_is_one_class(tmp_path: Path) -> None:
    root = tmp_path / "cells"
    _jpeg(root / "a.jpg", 1)
    _jpeg(root / "b.jpg", 2)
    result = scan_dataset(root, workers=1, progress=False)
    assert result.class_counts == {"cells": 2}


# --- bad input: the command cannot go on ------------------------------------------------------

def test_missing_root(capsys, tmp_path: Path) -> None:
    rc, _, err = _run(capsys, str(tmp_path / "nope"))
    assert rc == 2
    assert "does not exist" in _one_error_line(err) and "nope" in err


def test_root_is_a_file(capsys, tmp_path: Path) -> None:
    (tmp_path / "f.jpg").write_bytes(b"x")
    rc, _, err = _run(capsys, str(tmp_path / "f.jpg"))
    assert rc == 2
    assert "is a file, not a folder" in _one_error_line(err)


def test_empty_root(capsys, tmp_path: Path) -> None:
    (tmp_path / "BLA").mkdir()
    (tmp_path / "notes.txt").write_text("hello")
    rc, _, err = _run(capsys, str(tmp_path))
    assert rc == 2
    assert "no image files" in _one_error_line(err) and str(tmp_path) in err


def test_unwritable_output_location(capsys, tmp_path: Path, monkeypatch) -> None:
    _dataset(tmp_path / "data", per_class=1)
    (tmp_path / "afile").write_text("a regular file cannot hold a folder")

    def no_scan(*args, **kwargs):
        raise AssertionError("scanned before checking the output location")

    monkeypatch.setattr(scan_mod, "scan_dataset", no_scan)
    rc, _, err = _run(capsys, str(tmp_path / "data"), "--json",
                      "--out", str(tmp_path / "afile" / "manifest.csv"))
    assert rc == 2
    assert "afile" in _one_error_line(err)


# --- bad input: files that are skipped and reported -------------------------------------------

def test_class_folder_with_no_images_is_reported(capsys, tmp_path: Path) -> None:
    _dataset(tmp_path, per_class=1)
    (tmp_path / "CCC" / "0001-1000").mkdir(parents=True)
    rc, out, _ = _run(capsys, str(tmp_path), "--json", "--out", str(tmp_path / "m.csv"))
    assert rc == 0
    report = json.loads(out)
    assert report["total"] == 2
    assert {"path": "CCC", "kind": "empty-class"} == {
        k: v for k, v in report["problems"][0].items() if k != "detail"}
    assert "CCC" in report["problems"][0]["detail"]


@pytest.mark.parametrize(("name", "content", "detail"), [
    ("text.jpg", b"this is a text file, not a JPEG\n" * 10, "not an image file"),
    ("empty.jpg", b"", "empty file (0 bytes)"),
])
def test_non_image_and_zero_byte_files_are_unreadable(tmp_path, name, content, detail) -> None:
    _dataset(tmp_path, per_class=1)
    (tmp_path / "AAA" / name).write_bytes(content)
    entry = _by_path(scan_dataset(tmp_path, workers=1, progress=False))[f"AAA/{name}"]
    assert entry.status == "unreadable" and detail in entry.detail
    assert not entry.usable


def test_two_zero_byte_files_are_not_duplicates_of_each_other(tmp_path: Path) -> None:
    _dataset(tmp_path, per_class=1)
    (tmp_path / "AAA" / "e1.jpg").write_bytes(b"")
    (tmp_path / "BBB" / "e2.jpg").write_bytes(b"")
    entries = _by_path(scan_dataset(tmp_path, workers=1, progress=False))
    assert entries["BBB/e2.jpg"].status == "unreadable"
    assert "duplicate" not in entries["BBB/e2.jpg"].detail


def test_truncated_jpeg_is_unreadable(tmp_path: Path) -> None:
    _dataset(tmp_path, per_class=1)
    data = _jpeg(tmp_path / "full.jpg", 3, (120, 120)).read_bytes()
    (tmp_path / "AAA" / "cut.jpg").write_bytes(data[: len(data) * 2 // 3])
    entry = _by_path(scan_dataset(tmp_path, workers=1, progress=False))["AAA/cut.jpg"]
    assert entry.status == "unreadable" and "truncated" in entry.detail


def test_png_named_jpg_is_unreadable_wrong_extension(tmp_path: Path) -> None:
    _dataset(tmp_path, per_class=1)
    Image.fromarray(_cell(4)).save(tmp_path / "AAA" / "really_png.jpg", "PNG")
    entry = _by_path(scan_dataset(tmp_path, workers=1, progress=False))["AAA/really_png.jpg"]
    assert entry.status == "unreadable"
    assert "PNG data named .jpg" in entry.detail and "rename to .png" in entry.detail


def test_grayscale_png_is_converted_and_usable(tmp_path: Path) -> None:
    _dataset(tmp_path, per_class=1)
    Image.fromarray(_cell(5)).convert("L").save(tmp_path / "AAA" / "grey.png")
    entry = _by_path(scan_dataset(tmp_path, workers=1, progress=False))["AAA/grey.png"]
    assert entry.status == "converted" and "grayscale (L)" in entry.detail
    assert entry.usable and (entry.width, entry.height) == (64, 64)


def test_rgba_png_is_converted_and_usable(tmp_path: Path) -> None:
    _dataset(tmp_path, per_class=1)
    rgba = np.dstack([_cell(6), np.full((64, 64), 200, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "AAA" / "alpha.png")
    entry = _by_path(scan_dataset(tmp_path, workers=1, progress=False))["AAA/alpha.png"]
    assert entry.status == "converted" and "RGBA" in entry.detail and entry.usable


def test_sixteen_bit_png_is_converted(tmp_path: Path) -> None:
    _dataset(tmp_path, per_class=1)
    deep = (_cell(7)[..., 0].astype(np.uint16) * 257)
    Image.fromarray(deep).save(tmp_path / "AAA" / "deep.png")
    entry = _by_path(scan_dataset(tmp_path, workers=1, progress=False))["AAA/deep.png"]
    assert entry.status == "converted" and "16-bit" in entry.detail


def _png_48bit(arr: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG written by hand (Pillow cannot write one)."""
    h, w, _ = arr.shape
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_sixteen_bit_rgb_png_is_converted(tmp_path: Path) -> None:
    _dataset(tmp_path, per_class=1)
    (tmp_path / "AAA" / "deep_rgb.png").write_bytes(_png_48bit(_cell(8).astype(np.uint16) * 257))
    entry = _by_path(scan_dataset(tmp_path, workers=1, progress=False))["AAA/deep_rgb.png"]
    assert entry.status == "converted" and "16-bit RGB" in entry.detail


def test_unusual_size_is_kept_and_reported(tmp_path: Path) -> None:
    _dataset(tmp_path, per_class=3)
    _jpeg(tmp_path / "BBB" / "big.jpg", 8, (96, 80))
    result = scan_dataset(tmp_path, workers=1, progress=False)
    entry = _by_path(result)["BBB/big.jpg"]
    assert result.usual_size == (64, 64)
    assert entry.status == "unusual-size" and "96x80" in entry.detail and entry.usable


def test_worst_status_wins_and_detail_lists_all(tmp_path: Path) -> None:
    _dataset(tmp_path, per_class=3)
    Image.fromarray(_cell(9, (50, 40))).convert("L").save(tmp_path / "AAA" / "small_grey.png")
    entry = _by_path(scan_dataset(tmp_path, workers=1, progress=False))["AAA/small_grey.png"]
    assert entry.status == "converted"
    assert "converted: " in entry.detail and "unusual-size: 50x40" in entry.detail


def test_duplicate_across_classes_names_both_paths_and_labels(capsys, tmp_path: Path) -> None:
    _dataset(tmp_path, per_class=2)
    data = (tmp_path / "AAA" / "AAA_001.jpg").read_bytes()
    (tmp_path / "BBB" / "copy.jpg").write_bytes(data)
    rc, out, _ = _run(capsys, str(tmp_path), "--json", "--out", str(tmp_path / "m.csv"))
    assert rc == 0
    (problem,) = json.loads(out)["problems"]
    assert problem["path"] == "BBB/copy.jpg" and problem["kind"] == "duplicate"
    assert "BBB/copy.jpg" in problem["detail"] and "AAA/AAA_001.jpg" in problem["detail"]
    assert "AAA" in problem["detail"].replace("AAA/", "") and "BBB" in problem["detail"]
    entries = {e.path: e for e in read_manifest(tmp_path / "m.csv")}
    assert entries["AAA/AAA_001.jpg"].status == "ok"  # the first copy keeps its own status
    assert not entries["BBB/copy.jpg"].usable


# --- reports, manifest, parallelism, cache ----------------------------------------------------

def test_text_report_groups_problems_and_caps_paths(tmp_path: Path) -> None:
    _dataset(tmp_path, per_class=1)
    for i in range(25):
        (tmp_path / "AAA" / f"empty_{i:02d}.jpg").write_bytes(b"")
    result = scan_dataset(tmp_path, workers=1, progress=False)
    text = scan_report_text(result, manifest_path=tmp_path / "m.csv")
    assert "unreadable: 25" in text
    assert "AAA/empty_19.jpg" in text and "AAA/empty_20.jpg" not in text
    assert "... and 5 more" in text
    report = scan_report_json(result)
    assert report["total"] == 27 and len(report["problems"]) == 25
    assert report["classes"]["AAA"] == {"count": 1, "rejected": 25, "percent": 50.0}


def test_manifest_is_replaced_atomically(capsys, tmp_path: Path) -> None:
    _dataset(tmp_path / "data", per_class=2)
    out_csv = tmp_path / "out" / "manifest.csv"
    out_csv.parent.mkdir()
    out_csv.write_text("old manifest\n")
    inode = os.stat(out_csv).st_ino
    rc, _, _ = _run(capsys, str(tmp_path / "data"), "--json", "--out", str(out_csv))
    assert rc == 0
    # Written beside it, then renamed over it: a new file, no temporary left behind.
    assert os.stat(out_csv).st_ino != inode
    assert [p.name for p in out_csv.parent.iterdir()] == ["manifest.csv"]
    assert len(read_manifest(out_csv)) == 4


def test_parallel_scan_equals_serial_scan(tmp_path: Path) -> None:
    _dataset(tmp_path, per_class=6, classes=("AAA", "BBB", "CCC"))
    (tmp_path / "AAA" / "empty.jpg").write_bytes(b"")
    serial = scan_dataset(tmp_path, workers=1, progress=False)
    parallel = scan_dataset(tmp_path, workers=2, progress=False)
    assert parallel.entries == serial.entries
    assert parallel.problems == serial.problems


def test_each_file_is_read_once_and_decoded_once(tmp_path: Path, monkeypatch) -> None:
    _dataset(tmp_path, per_class=3)
    (tmp_path / "AAA" / "bad.jpg").write_bytes(b"not a picture")
    opened: list[str] = []
    decoded: list[int] = []
    real_open, real_decode = open, scan_mod.decode_bytes

    def counting_open(path, *args, **kwargs):
        opened.append(os.fspath(path))
        return real_open(path, *args, **kwargs)

    def counting_decode(data: bytes, ext: str):
        decoded.append(len(data))
        return real_decode(data, ext)

    monkeypatch.setattr(scan_mod, "open", counting_open, raising=False)
    monkeypatch.setattr(scan_mod, "decode_bytes", counting_decode)
    result = scan_dataset(tmp_path, workers=1, progress=False)
    assert sorted(opened) == sorted(str(tmp_path / e.path) for e in result.entries)
    assert len(decoded) == result.total == 7
    # The hash is of the very bytes that were decoded.
    sizes = {e.path: (tmp_path / e.path).stat().st_size for e in result.entries}
    assert sorted(decoded) == sorted(sizes.values())


def test_load_or_scan_reuses_then_rescans_after_a_change(tmp_path: Path, monkeypatch) -> None:
    root = _dataset(tmp_path / "data", per_class=2)
    first = load_or_scan(root, workers=1, progress=False)
    assert default_manifest_path(root).is_file()
    calls: list[str] = []
    real_scan = scan_mod.scan_dataset

    def spy(*args, **kwargs):
        calls.append("scan")
        return real_scan(*args, **kwargs)

    monkeypatch.setattr(scan_mod, "scan_dataset", spy)
    assert load_or_scan(root, workers=1, progress=False) == first
    assert calls == []
    # A file changes (new content, new size): the fingerprint no longer matches.
    target = root / "BBB" / "BBB_001.jpg"
    buf = io.BytesIO()
    Image.fromarray(_cell(77, (64, 64))).save(buf, "JPEG", quality=60)
    target.write_bytes(buf.getvalue())
    again = load_or_scan(root, workers=1, progress=False)
    assert calls == ["scan"]
    changed = {e.path: e.sha1 for e in again}
    assert changed["BBB/BBB_001.jpg"] != {e.path: e.sha1 for e in first}["BBB/BBB_001.jpg"]
    # An added file also triggers a rescan.
    _jpeg(root / "AAA" / "new.jpg", 55)
    assert len(load_or_scan(root, workers=1, progress=False)) == 5
    assert calls == ["scan", "scan"]


def test_load_or_scan_errors_on_missing_root(tmp_path: Path) -> None:
    with pytest.raises(HemacnnError, match="does not exist"):
        load_or_scan(tmp_path / "missing", progress=False)


def test_cli_text_report_with_progress_bar(capsys, tmp_path: Path) -> None:
    _dataset(tmp_path / "data", per_class=2, classes=("BLA", "LYT"))
    (tmp_path / "data" / "LYT" / "empty.jpg").write_bytes(b"")
    out_csv = tmp_path / "m.csv"
    rc, out, err = _run(capsys, str(tmp_path / "data"), "--out", str(out_csv), "--workers", "2")
    assert rc == 0
    assert "scanning" in err and "5/5" in err  # the progress bar went to stderr
    assert "lymphocyte" in out and "26,242" in out  # Matek codes: the paper's counts beside
    assert "unreadable: 1" in out and "LYT/empty.jpg: empty file (0 bytes)" in out
    assert f"Manifest written to {out_csv}" in out


# --- usable and rejected files per class ----------------------------------------------------

def _with_rejects(root: Path) -> Path:
    _dataset(root, per_class=3)
    (root / "CCC").mkdir()
    for i in range(2):
        (root / "BBB" / f"note_{i}.jpg").write_text("not a picture")
        (root / "CCC" / f"text_{i}.jpg").write_text("not a picture")
    return root


def test_class_table_counts_usable_and_rejected_separately(tmp_path: Path, capsys) -> None:
    root = _with_rejects(tmp_path / "data")
    rc, out, _ = _run(capsys, str(root), "--json", "--out", str(tmp_path / "m.csv"))
    assert rc == 0
    classes = json.loads(out)["classes"]
    assert {c: (v["count"], v["rejected"]) for c, v in classes.items()} == {
        "AAA": (3, 0), "BBB": (3, 2), "CCC": (0, 2)}
    assert classes["AAA"]["percent"] == 50.0  # of the usable images
    rc, out, _ = _run(capsys, str(root), "--out", str(tmp_path / "m.csv"))
    assert rc == 0
    assert "Rejected" in out
    rows = [[c.strip() for c in ln.split("│")[1:-1]] for ln in out.splitlines() if "│" in ln]
    assert {r[0]: r[2:4] for r in rows} == {"AAA": ["3", "0"], "BBB": ["3", "2"],
                                            "CCC": ["0", "2"]}


def test_scan_fails_when_no_image_is_usable(tmp_path: Path, capsys) -> None:
    root = tmp_path / "data"
    (root / "CCC").mkdir(parents=True)
    for i in range(3):
        (root / "CCC" / f"text_{i}.jpg").write_text("not a picture")
    rc, out, err = _run(capsys, str(root), "--out", str(tmp_path / "m.csv"))
    assert rc == 2
    assert "Usable for training: 0 of 3" in out
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: ") and "Traceback" not in err
    assert "no usable image" in line and str(root) in line
