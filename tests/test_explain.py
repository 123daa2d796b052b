"""Heat maps: every registered architecture gets a target layer and an overlay PNG."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from factories import model_card, save_checkpoint
from hemacnn.cli import main
from hemacnn.data.images import preprocess_image
from hemacnn.errors import HemacnnError
from hemacnn.inference.explain import (
    CAPTION_HEIGHT,
    MIN_WIDTH,
    class_activation,
    coarse_note,
    map_grid,
    target_layer,
)
from hemacnn.inference.loading import load_checkpoint
from hemacnn.models import build_model, list_models, min_input_size


def _tiny_checkpoint(name: str, path: Path) -> Path:
    """A checkpoint in train.py's format for a small, untrained ``name`` model."""
    size = max(min_input_size(name), 32)
    torch.manual_seed(0)
    try:  # the paper's tables shrink with a width multiplier; zoo models have none
        model = build_model(name, 2, size, width=0.125)
    except HemacnnError:
        model = build_model(name, 2, size)
    return save_checkpoint(path, model, model_card(["BLA", "LYT"], model.hemacnn_arch))


@pytest.mark.parametrize("name", list_models())
def test_explain_writes_an_overlay_for_every_architecture(name, sample_root, tmp_path):
    ckpt = _tiny_checkpoint(name, tmp_path / f"{name.replace('/', '_')}.ckpt")
    model, _ = load_checkpoint(ckpt, device="cpu", prepare=False)
    layer = target_layer(model)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert layer is convs[-1]
    # the layer the CAM hooks really is on the forward path: its output changes the logits
    seen = []
    handle = layer.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    model(torch.rand(1, 3, 32, 32) if min_input_size(name) <= 32 else
          torch.rand(1, 3, min_input_size(name), min_input_size(name)))
    handle.remove()
    assert seen, f"{name}: target layer not used in forward"
    img = sorted((sample_root / "BLA").rglob("*.jpg"))[0]
    out = tmp_path / "maps"
    assert main(["explain", str(ckpt), str(img), "--out", str(out), "--target", "LYT"]) == 0
    png = out / f"{img.stem}.gradcam.png"
    shown = np.asarray(Image.open(png).convert("RGB"))
    original = np.asarray(Image.open(img).convert("RGB"))
    h, w = original.shape[:2]
    assert shown.shape == (h + CAPTION_HEIGHT, max(2 * w, MIN_WIDTH), 3)
    assert np.array_equal(shown[:h, :w], original)
    assert not np.array_equal(shown[:h, w:2 * w], original)  # the overlay is drawn


def test_a_coarse_heat_map_says_so(sample_root, tmp_path, capsys):
    # MV3 at 42 px ends in a 2x2 grid: the map is four values blurred up, and the output says so.
    torch.manual_seed(0)
    model = build_model("mv3", 2, 42, width=0.125)
    ckpt = save_checkpoint(tmp_path / "mv3.ckpt", model, model_card(["BLA", "LYT"],
                                                                    model.hemacnn_arch))
    model, _ = load_checkpoint(ckpt, device="cpu", prepare=False)
    assert map_grid(model, 42) == (2, 2)
    assert coarse_note((2, 2)) == "coarse: a 2x2 map, blurred up to the image"
    assert coarse_note((8, 8)) == ""  # a fine enough map carries no caveat
    img = sorted((sample_root / "BLA").rglob("*.jpg"))[0]
    assert main(["explain", str(ckpt), str(img), "--out", str(tmp_path / "maps")]) == 0
    out = capsys.readouterr().out
    note = [ln for ln in out.splitlines() if ln.startswith("note:")]
    assert note == ["note: heat maps are coarse: a 2x2 map, blurred up to the image: the last "
                    "convolution, the layer the classifier pools, sees 42 px inputs as 2x2 "
                    "cells; a larger model.input_size gives a finer map"], out


def test_heat_map_depends_on_the_explained_class(trained_run, sample_root):
    model, card = load_checkpoint(trained_run, device="cpu", prepare=False)
    img = preprocess_image(sorted((sample_root / "BLA").rglob("*.jpg"))[5], card["input_size"])
    maps = class_activation(model, np.stack([img, img]), [0, 1])
    assert maps.shape == (2, card["input_size"], card["input_size"])
    assert 0 <= maps.min() and maps.max() <= 1 and maps.max() > 0
    assert not np.allclose(maps[0], maps[1])
    for method in ("gradcam++", "eigencam"):
        assert class_activation(model, img[None], [0], method).shape[0] == 1


def test_explain_errors(trained_run, tmp_path, capsys):
    (tmp_path / "x.jpg").write_text("text")
    assert main(["explain", str(trained_run), str(tmp_path / "x.jpg"), "--out",
                 str(tmp_path)]) == 2
    assert "no heat map written" in capsys.readouterr().err
    card = json.loads((trained_run / "model_card.json").read_text())
    assert main(["explain", str(trained_run), str(tmp_path / "x.jpg"), "--target", "EOS"]) == 2
    err = capsys.readouterr().err
    assert "--target EOS" in err and ", ".join(card["classes"]) in err
    assert main(["explain", str(trained_run), str(tmp_path / "x.jpg"), "--method", "magic"]) == 2


def _jet_share(strip: np.ndarray) -> tuple[bool, bool]:
    """Whether the strip holds the dark blue and the dark red ends of matplotlib's jet scale."""
    px = strip.reshape(-1, 3).astype(int)
    blue = ((px[:, 0] < 30) & (px[:, 1] < 30) & (px[:, 2] > 110)).any()
    red = ((px[:, 0] > 110) & (px[:, 1] < 30) & (px[:, 2] < 30)).any()
    return bool(blue), bool(red)


def test_heat_map_png_is_labelled_with_class_probability_method_and_scale(trained_run,
                                                                          sample_root, tmp_path,
                                                                          capsys):
    img = sorted((sample_root / "BLA").rglob("*.jpg"))[5]
    h, w = np.asarray(Image.open(img)).shape[:2]
    strips = {}
    for target, method in (("BLA", "gradcam"), ("LYT", "gradcam"), ("BLA", "eigencam")):
        out = tmp_path / f"{target}-{method}"
        assert main(["explain", str(trained_run), str(img), "--out", str(out), "--target",
                     target, "--method", method]) == 0
        shown = np.asarray(Image.open(out / f"{img.stem}.{method}.png").convert("RGB"))
        strip = shown[h:]
        assert strip.shape[0] == CAPTION_HEIGHT
        assert _jet_share(strip) == (True, True)  # the colour scale, both ends
        assert (strip.max(axis=2) < 80).sum() > 200  # dark caption text on the white strip
        strips[target, method] = strip
    assert f"{img}  BLA " in capsys.readouterr().out
    # the caption says which class and which method: change either and the text changes
    assert not np.array_equal(strips["BLA", "gradcam"], strips["LYT", "gradcam"])
    assert not np.array_equal(strips["BLA", "gradcam"], strips["BLA", "eigencam"])
