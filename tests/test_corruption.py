"""The pixel check for damaged JPEG data: real corrupt files, the clean sample, and damage made
here from clean images the detector has never been tuned on."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import SHARED_DATA
from hemacnn.data.corruption import detect_corruption, jpeg_quant_step, to_gray
from hemacnn.data.images import decode_bytes, load_rgb


def _victims(sample_root: Path) -> list[Path]:
    """Four clean images spread over the classes (every 600th file) to damage here."""
    files = sorted(sample_root.rglob("*.jpg"))[100::600]
    assert len(files) == 4
    return files


def _scan_data_start(data: bytes) -> int:
    """Offset of the first byte of entropy-coded data (just after the SOS header)."""
    sos = data.index(b"\xff\xda")
    return sos + 2 + int.from_bytes(data[sos + 2:sos + 4], "big")


def _decode(data: bytes) -> np.ndarray:
    """Strict full decode, as the scan does it (raises on truncation)."""
    return np.asarray(decode_bytes(data, ".jpg").image)


def _jpeg_bytes(rgb: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _verdict(data: bytes) -> tuple[bool, str]:
    """The scan's verdict: pixels plus how coarsely the file was compressed."""
    img = decode_bytes(data, ".jpg")
    return detect_corruption(img.image, img.quant_step)


def test_real_corrupt_files_are_flagged(corrupt_root: Path) -> None:
    files = sorted(corrupt_root.glob("*.jpg"))
    assert len(files) == 4
    for f in files:
        bad, detail = detect_corruption(load_rgb(f))
        assert bad, f"{f.name} not flagged"
        assert detail.startswith("damaged picture data: ")


def test_clean_sample_is_at_most_one_percent_flagged(sample_root: Path) -> None:
    files = sorted(sample_root.rglob("*.jpg"))
    assert len(files) == 2440
    flagged = [f.name for f in files if detect_corruption(load_rgb(f))[0]]
    assert len(flagged) <= len(files) // 100, flagged


def test_grey_band_over_lower_third_is_flagged(sample_root: Path) -> None:
    for path in _victims(sample_root):
        rgb = load_rgb(path)
        assert not detect_corruption(rgb)[0], f"{path.name} flagged before any damage"
        damaged = rgb.copy()
        damaged[rgb.shape[0] * 2 // 3:] = 128  # not on the 8 px grid: 166 is not a multiple
        buf = io.BytesIO()
        Image.fromarray(damaged).save(buf, "JPEG", quality=90)
        bad, detail = detect_corruption(_decode(buf.getvalue()))
        assert bad and "flat or repeated" in detail, (path.name, detail)


def test_truncated_then_zero_padded_jpeg_is_flagged(sample_root: Path) -> None:
    for path in _victims(sample_root):
        data = path.read_bytes()
        start = _scan_data_start(data)
        cut = start + (len(data) - start) * 3 // 5
        # Same length as before, ending in a proper EOI marker: no decoder sees truncation.
        padded = data[:cut] + b"\x00" * (len(data) - cut - 2) + b"\xff\xd9"
        pixels = _decode(padded)
        bad, detail = detect_corruption(pixels)
        assert bad, (path.name, detail)


def test_random_bytes_in_scan_data_are_flagged(sample_root: Path) -> None:
    rng = np.random.default_rng(7)
    for path in _victims(sample_root):
        data = bytearray(path.read_bytes())
        clean = _decode(bytes(data))
        start = _scan_data_start(bytes(data))
        at = start + (len(data) - start) * 2 // 5
        # 0xFF would start a marker; anything else is decoded as (wrong) picture data.
        data[at:at + 64] = rng.integers(0, 255, 64, dtype=np.uint8).tobytes()
        pixels = _decode(bytes(data))
        # The damage is real: the lower part of the picture changed substantially.
        lower = slice(clean.shape[0] * 2 // 3, None)
        change = np.abs(pixels[lower].astype(int) - clean[lower].astype(int)).mean()
        assert change > 5, (path.name, change)
        bad, detail = detect_corruption(pixels)
        assert bad, (path.name, detail)


def test_noisy_synthetic_jpegs_and_blank_images_are_not_flagged() -> None:
    rng = np.random.default_rng(0)
    for size in (48, 64, 250):
        for quality in (75, 95):
            arr = np.clip(rng.normal((60, 160, 60), 40, (size, size, 3)), 0, 255).astype(np.uint8)
            buf = io.BytesIO()
            Image.fromarray(arr).save(buf, "JPEG", quality=quality)
            assert not detect_corruption(_decode(buf.getvalue()))[0], (size, quality)
    # A blank picture is not damaged data (it has nothing to lose): no verdict.
    assert not detect_corruption(np.full((250, 250, 3), 128, np.uint8))[0]
    # Saturated white background is legitimately flat.
    white = np.full((250, 250, 3), 255, np.uint8)
    white[:100] = rng.integers(100, 200, (100, 250, 3), dtype=np.uint8)
    assert not detect_corruption(white)[0]


def test_gray_and_rgb_inputs_agree(corrupt_root: Path) -> None:
    rgb = load_rgb(sorted(corrupt_root.glob("*.jpg"))[0])
    assert detect_corruption(rgb) == detect_corruption(to_gray(rgb))
    assert detect_corruption(Image.fromarray(rgb)) == detect_corruption(rgb)
    with pytest.raises(ValueError, match="image array"):
        detect_corruption(np.zeros((4, 4, 4, 4), np.uint8))


def test_tiny_images_are_not_judged() -> None:
    arr = np.zeros((16, 300, 3), np.uint8)
    arr[8:] = 128  # a perfect seam, but only two block rows: too little to judge
    assert detect_corruption(arr) == (False, "")


def test_quant_step_reads_the_jpeg_tables(corrupt_root: Path) -> None:
    with Image.open(sorted(corrupt_root.glob("*.jpg"))[0]) as im:
        assert jpeg_quant_step(im) == 1.0  # Matek's files are quality 100
    rgb = np.zeros((64, 64, 3), np.uint8)
    steps = [decode_bytes(_jpeg_bytes(rgb, q), ".jpg").quant_step for q in (95, 75, 30)]
    assert steps[0] < 4.0 < steps[1] < steps[2]


def test_coarsely_compressed_clean_images_are_not_flagged(sample_root: Path) -> None:
    # Coarse compression makes smooth areas flat and block edges steep: the checks must not
    # mistake that for damage (a dataset of quality-50 JPEGs would otherwise be all 'suspicious').
    files = sorted(sample_root.rglob("*.jpg"))[::61]
    for quality in (50, 75):
        flagged = [f.name for f in files if _verdict(_jpeg_bytes(load_rgb(f), quality))[0]]
        assert flagged == [], (quality, flagged)


def test_damage_in_coarsely_compressed_files_is_still_found(sample_root: Path) -> None:
    rng = np.random.default_rng(3)
    for path in _victims(sample_root):
        rgb = load_rgb(path)
        grey = rgb.copy()
        grey[166:] = 128
        assert _verdict(_jpeg_bytes(grey, 75))[0], path.name
        data = bytearray(_jpeg_bytes(rgb, 75))
        at = _scan_data_start(bytes(data)) + (len(data) - _scan_data_start(bytes(data))) // 3
        data[at:at + 64] = rng.integers(0, 255, 64, dtype=np.uint8).tobytes()
        assert _verdict(bytes(data))[0], path.name


# --- other datasets: smooth, resized, re-encoded pictures (issue 7, item 11) -------------------

PBC = SHARED_DATA / "pbc_false_flags"  # HEMACNN_SHARED_DATA moves it with the other data


def _demo_cells() -> list[Path]:
    """Real Matek cells shipped with the package (so these tests run on a fresh clone)."""
    from hemacnn.demo import sample_root

    return sorted(sample_root().rglob("*.jpg"))[::15]


def _on_smooth_background(cell: np.ndarray, seed: int, quality: int) -> bytes:
    """A real cell resized onto a smooth pale 'plasma' background, re-encoded as JPEG: what
    peripheral-blood datasets look like (no sensor noise left in the background)."""
    rng = np.random.default_rng(seed)
    h, w = 369, 366
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.array([232, 214, 196]) + rng.uniform(-8, 8, 3)
    tilt = rng.uniform(-10, 10, 2)
    # Plasma is smooth but not perfectly even: a gentle tilt and a little blotchy texture.
    blotch = np.asarray(Image.fromarray(rng.normal(0, 40, (12, 12)).astype(np.float32)).resize(
        (w, h), Image.BICUBIC)) / 10
    bg = base + (tilt[0] * xx + tilt[1] * yy + blotch)[..., None] + rng.normal(0, 0.8, (h, w, 1))
    canvas = np.clip(bg, 0, 255).astype(np.uint8)
    side = int(rng.integers(150, 220))
    small = np.asarray(Image.fromarray(cell).resize((side, side), Image.BILINEAR))
    top, left = int(rng.integers(0, h - side)), int(rng.integers(0, w - side))
    # Feather the pasted square so its edge is not a hard line in the smooth background.
    r = np.hypot(*np.mgrid[-1:1:side * 1j, -1:1:side * 1j])
    alpha = np.clip((1.0 - r) * 3, 0, 1)[..., None]
    patch = canvas[top:top + side, left:left + side]
    canvas[top:top + side, left:left + side] = (alpha * small + (1 - alpha) * patch).astype(
        np.uint8)
    return _jpeg_bytes(canvas, quality)


def test_smooth_resized_reencoded_cells_are_not_flagged() -> None:
    cases = [(cell, seed, q) for seed, cell in enumerate(_demo_cells()) for q in (85, 90, 95)]
    flagged = []
    for cell, seed, quality in cases:
        data = _on_smooth_background(load_rgb(cell), seed, quality)
        if _verdict(data)[0]:
            flagged.append((cell.name, quality, _verdict(data)[1]))
    assert flagged == [], flagged


def test_damage_in_smooth_reencoded_cells_is_still_found() -> None:
    for seed, cell in enumerate(_demo_cells()[:4]):
        rgb = np.asarray(decode_bytes(_on_smooth_background(load_rgb(cell), seed, 90),
                                      ".jpg").image)
        grey = rgb.copy()
        grey[250:] = 128
        assert _verdict(_jpeg_bytes(grey, 90))[0], cell.name
        data = _jpeg_bytes(rgb, 90)
        start = _scan_data_start(data)
        cut = start + (len(data) - start) * 3 // 5
        padded = data[:cut] + b"\x00" * (len(data) - cut - 2) + b"\xff\xd9"
        assert _verdict(padded)[0], cell.name


@pytest.mark.skipif(not PBC.is_dir(), reason=f"peripheral-blood false alarms not at {PBC}")
def test_peripheral_blood_images_pass() -> None:
    files = sorted((PBC / "flagged").glob("*.jpg")) + sorted((PBC / "clean").glob("*.jpg"))
    assert len(files) == 24
    flagged = [f.name for f in files if _verdict(f.read_bytes())[0]]
    assert flagged == []
