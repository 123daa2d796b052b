"""`evaluate` reads a run's split from the image cache training built, only while it is valid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import hemacnn.evaluation.evaluate as evaluate_module
from factories import RUN_SIZE, fake_run, labelled_images
from hemacnn.data.cache import build_cache
from hemacnn.data.scan import load_or_scan
from hemacnn.evaluation.evaluate import evaluate_run


@pytest.fixture()
def cached_run(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    rows = labelled_images(data, per_class=5)
    run = fake_run(tmp_path / "run", data, {"train": rows[:9], "val": rows[9:12],
                                            "test": rows[12:]})
    entries = {e.path: e for e in load_or_scan(data, progress=False)}
    build_cache(data, [entries[p] for p, _ in rows], RUN_SIZE, "nearest", workers=1,
                progress=False)
    return run


def _decodes(monkeypatch: pytest.MonkeyPatch) -> list:
    calls: list = []
    real = evaluate_module.load_images
    monkeypatch.setattr(evaluate_module, "load_images",
                        lambda files, card: calls.append(len(files)) or real(files, card))
    return calls


def test_the_split_comes_from_the_cache_with_the_same_probabilities(cached_run, monkeypatch,
                                                                    tmp_path):
    calls = _decodes(monkeypatch)
    cached = evaluate_run(cached_run, out=tmp_path / "a")
    assert calls == []  # nothing decoded again
    monkeypatch.setattr(evaluate_module, "_cached_images", lambda *a: None)
    decoded = evaluate_run(cached_run, out=tmp_path / "b")
    assert calls == [3]
    with np.load(cached["outputs"]["predictions"]) as a, \
            np.load(decoded["outputs"]["predictions"]) as b:
        np.testing.assert_array_equal(a["paths"], b["paths"])
        np.testing.assert_allclose(a["probs"], b["probs"], atol=1e-6)


def test_a_changed_file_is_decoded_again(cached_run, monkeypatch):
    data = Path(evaluate_module.read_card(cached_run)["data_root"])
    rel = sorted((data / "NGS").iterdir())[-1]  # a test image
    Image.new("RGB", (64, 64), (250, 250, 0)).save(rel, quality=90)
    calls = _decodes(monkeypatch)
    evaluate_run(cached_run)
    assert calls == [3]
