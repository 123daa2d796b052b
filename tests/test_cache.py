"""Preprocessing and the memory-mapped cache: exactness, draft mode, keying, atomic builds."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import pickle
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from factories import random_png_entries
from hemacnn.data import cache as cache_mod
from hemacnn.data.cache import ImageCache, build_cache
from hemacnn.data.images import preprocess_image
from hemacnn.data.manifest import Entry
from hemacnn.data.paths import dataset_cache_dir
from hemacnn.errors import HemacnnError

THREE = ("BLA", "LYT", "NGS")


def listing_entries(root: Path, classes=THREE) -> list[Entry]:
    """Every .jpg of the classes as an 'ok' entry, without a scan (class = first folder)."""
    out = []
    for code in classes:
        for p in sorted((root / code).rglob("*.jpg")):
            rel = p.relative_to(root).as_posix()
            out.append(Entry(rel, code, hashlib.sha1(rel.encode()).hexdigest(), 250, 250, "ok"))
    return out


def png_root(tmp_path: Path, n: int = 10) -> tuple[Path, list[Entry]]:
    root = tmp_path / "data"
    return root, random_png_entries(root, n)


def cache_dirs(root: Path) -> list[str]:
    parent = dataset_cache_dir(root)
    return sorted(p.name for p in parent.iterdir()) if parent.is_dir() else []


# --- preprocess_image ---------------------------------------------------------------------

def test_nearest_is_exact_pil_nearest_of_full_decode(matek_images: Path) -> None:
    f = next((matek_images / "LYT").rglob("*.jpg"))
    for size in (64, 128):
        expected = np.asarray(Image.open(f).convert("RGB").resize((size, size), Image.NEAREST))
        got = preprocess_image(f, size)
        assert got.dtype == np.uint8 and got.shape == (size, size, 3)
        assert np.array_equal(got, expected)


def test_draft_used_for_area_and_bilinear_only_below_half_size(matek_images: Path) -> None:
    f = next((matek_images / "BLA").rglob("*.jpg"))
    for method in ("area", "bilinear"):
        fast = preprocess_image(f, 64, method).astype(int)
        exact = preprocess_image(f, 64, method, draft=False).astype(int)
        assert not np.array_equal(fast, exact)  # DCT scaling really happened
        assert np.abs(fast - exact).mean() < 3.0  # ... and gives the same kind of picture
        # At 128 px a 250 px JPEG cannot be DCT-halved: draft changes nothing.
        assert np.array_equal(preprocess_image(f, 128, method),
                              preprocess_image(f, 128, method, draft=False))


def test_modes_are_converted_to_rgb(tmp_path: Path) -> None:
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    Image.fromarray(grey, mode="L").save(tmp_path / "grey.png")
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 0
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16)).save(tmp_path / "deep.png")
    Image.fromarray(grey, mode="L").convert("P").save(tmp_path / "pal.png")

    g = preprocess_image(tmp_path / "grey.png", 8)
    assert g.shape == (8, 8, 3) and np.array_equal(g[..., 0], grey)
    assert np.array_equal(g[..., 0], g[..., 2])
    assert np.all(preprocess_image(tmp_path / "rgba.png", 8) == 255)  # transparent -> white
    assert np.all(preprocess_image(tmp_path / "deep.png", 4) == 255)  # scaled, not clipped
    assert preprocess_image(tmp_path / "pal.png", 8).shape == (8, 8, 3)


def test_unreadable_files_give_one_line_error(tmp_path: Path, sample_root: Path) -> None:
    (tmp_path / "zero.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not an image")
    data = next((sample_root / "NGS").rglob("*.jpg")).read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    for name in ("zero.jpg", "text.jpg", "cut.jpg", "absent.jpg"):
        with pytest.raises(HemacnnError, match=f"cannot read image .*{name}") as err:
            preprocess_image(tmp_path / name, 32)
        assert "\n" not in str(err.value)


def test_bad_method_and_size(tmp_path: Path) -> None:
    with pytest.raises(HemacnnError, match="unknown resize method 'cubic'; choose one of "
                       "nearest, area, bilinear"):
        preprocess_image(tmp_path / "x.png", 32, "cubic")
    with pytest.raises(HemacnnError, match="positive number of pixels"):
        preprocess_image(tmp_path / "x.png", 0)


# --- build_cache ----------------------------------------------------------------------------

def test_cache_built_once_and_rebuilt_only_when_key_changes(tmp_path: Path) -> None:
    root, entries = png_root(tmp_path)
    c1 = build_cache(root, entries, 16, workers=1, progress=False)
    assert c1.built and len(c1) == 10
    stat = os.stat(c1.folder / "images.npy")
    c2 = build_cache(root, list(reversed(entries)), 16, workers=1, progress=False)
    assert not c2.built and c2.folder == c1.folder
    stat2 = os.stat(c2.folder / "images.npy")
    assert (stat2.st_ino, stat2.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)

    other = [build_cache(root, entries, 20, workers=1, progress=False),
             build_cache(root, entries, 16, "area", workers=1, progress=False),
             build_cache(root, entries[:-1], 16, workers=1, progress=False),
             build_cache(root, entries[:-1] + [Entry(entries[-1].path, "B", "changed-sha",
                                                     40, 40, "ok")], 16, workers=1,
                         progress=False)]
    assert all(c.built for c in other)
    assert len({c.folder for c in [c1, *other]}) == 5
    assert other[0].array.shape == (10, 20, 20, 3) and len(other[2]) == 9


def test_cache_rows_equal_preprocessing_and_skip_unusable(tmp_path: Path) -> None:
    root, entries = png_root(tmp_path)
    bad = [Entry("A/missing.png", "A", "m", 0, 0, "unreadable"),
           Entry("B/copy.png", "B", "d", 40, 40, "duplicate")]
    c = build_cache(root, entries + bad, 24, "bilinear", workers=2, progress=False)
    assert len(c) == 10 and "A/missing.png" not in c and "B/copy.png" not in c
    assert c.array.dtype == np.uint8 and c.array.shape == (10, 24, 24, 3)
    rows = c.rows([e.path for e in entries])
    for e, r in zip(entries, rows, strict=True):
        assert np.array_equal(c.get(int(r)), preprocess_image(root / e.path, 24, "bilinear"))
    with pytest.raises(HemacnnError, match="A/missing.png is not in the image cache"):
        c.rows(["A/missing.png"])


def test_interrupted_build_leaves_no_cache(tmp_path: Path, monkeypatch) -> None:
    root, entries = png_root(tmp_path, n=200)
    real = cache_mod.preprocess_image
    calls = {"n": 0}

    def dies_midway(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 100:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(cache_mod, "preprocess_image", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        build_cache(root, entries, 8, workers=1, progress=False)
    assert [d for d in cache_dirs(root) if not d.endswith(".lock")] == []
    monkeypatch.setattr(cache_mod, "preprocess_image", real)
    assert build_cache(root, entries, 8, workers=1, progress=False).built


def test_killed_build_leftovers_are_ignored_then_removed(tmp_path: Path) -> None:
    root, entries = png_root(tmp_path)
    parent = dataset_cache_dir(root)
    parent.mkdir(parents=True)
    # A build killed with -9 leaves a temp folder named after its (now dead) process.
    dead = cache_mod._tmp_prefix(pid=2**22 + 12345) + "abc-xyz"
    (parent / dead).mkdir()
    (parent / dead / "images.npy").write_bytes(b"partial")
    c = build_cache(root, entries, 8, workers=1, progress=False)
    assert c.built and not (parent / dead).exists()
    assert [d for d in cache_dirs(root) if not d.endswith(".lock")] == [c.folder.name]


def test_rename_race_loser_reuses_winner(tmp_path: Path, monkeypatch) -> None:
    root, entries = png_root(tmp_path)
    real_fill = cache_mod._run_fill
    other: list[ImageCache] = []

    def another_host_finishes_first(npy, *args, **kwargs):
        real_fill(npy, *args, **kwargs)
        # A builder that did not share our lock completes the same cache before our rename.
        final = dataset_cache_dir(root) / f"cache-{cache_mod.cache_key(entries, 8, 'nearest')}"
        monkeypatch.setattr(cache_mod, "_run_fill", real_fill)
        other.append(cache_mod._build(root, sorted(entries, key=lambda e: e.path), final,
                                      final.name[6:], 8, "nearest", None, 1, False))

    monkeypatch.setattr(cache_mod, "_run_fill", another_host_finishes_first)
    mine = build_cache(root, entries, 8, workers=1, progress=False)
    assert other[0].built and not mine.built and mine.folder == other[0].folder
    assert [d for d in cache_dirs(root) if not d.endswith(".lock")] == [mine.folder.name]


def _build_in_child(root: Path, entries: list[Entry], queue) -> None:
    queue.put(build_cache(root, entries, 16, workers=1, progress=False).built)


def test_two_processes_build_once(tmp_path: Path) -> None:
    root, entries = png_root(tmp_path, n=300)
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_build_in_child, args=(root, entries, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert sorted([queue.get(timeout=5), queue.get(timeout=5)]) == [False, True]
    assert len([d for d in cache_dirs(root) if d.startswith("cache-")]) == 1


def test_pickled_cache_does_not_carry_the_array(tmp_path: Path) -> None:
    root, entries = png_root(tmp_path)
    c = build_cache(root, entries, 64, workers=1, progress=False)
    _ = c.array[0]
    clone = pickle.loads(pickle.dumps(c))
    assert len(pickle.dumps(c)) < c.array.nbytes // 10
    assert np.array_equal(clone.get(3), c.get(3))


def test_no_usable_entries(tmp_path: Path) -> None:
    with pytest.raises(HemacnnError, match="no usable images to cache"):
        build_cache(tmp_path, [Entry("A/x.jpg", "A", "s", 0, 0, "unreadable")], 16,
                    progress=False)


# --- real sample ----------------------------------------------------------------------------

@pytest.mark.parametrize("size", [64, 128])
def test_sample_cache_64_and_128(sample_root: Path, size: int) -> None:
    entries = listing_entries(sample_root)
    c = build_cache(sample_root, entries, size, workers=2, progress=False)
    assert len(c) == 330 + 345 + 317
    assert c.array.shape == (992, size, size, 3) and c.array.dtype == np.uint8
    assert isinstance(c.array, np.memmap)
    for e in (entries[0], entries[500], entries[-1]):
        row = int(c.rows([e.path])[0])
        assert np.array_equal(c.get(row), preprocess_image(sample_root / e.path, size))
    again = build_cache(sample_root, entries, size, workers=2, progress=False)
    assert not again.built and again.folder == c.folder


def test_build_never_holds_the_whole_array(tmp_path: Path) -> None:
    root, entries = png_root(tmp_path, n=300)
    tracemalloc.start()
    try:
        c = build_cache(root, entries, 64, workers=1, progress=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert c.built and c.array.nbytes == 300 * 64 * 64 * 3
    assert peak < c.array.nbytes / 4  # rows go straight into the memory map


def test_unwritable_cache_location(tmp_path: Path, monkeypatch) -> None:
    root, entries = png_root(tmp_path)
    (tmp_path / "file.txt").write_text("x")
    monkeypatch.setenv("HEMACNN_CACHE", str(tmp_path / "file.txt" / "cache"))
    with pytest.raises(HemacnnError, match="cannot create folder .*file.txt/cache"):
        build_cache(root, entries, 8, workers=1, progress=False)
