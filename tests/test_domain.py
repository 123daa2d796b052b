"""Another laboratory's cells: class maps, stain robustness options, the batch colour warning.

Real images: the Matek sample and PBC's cells (``../shared/data/pbc_dev``, another lab, scanner
and stain). The session's trained quick model (BLA/LYT/NGS) is the model under test; one more
tiny run is trained with every robustness option switched on.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import SHARED_DATA
from factories import image_folder
from hemacnn.cli import main
from hemacnn.errors import HemacnnError
from hemacnn.scoring.classmap import LeftOut, load_class_map, parse_class_map, resolve
from hemacnn.scoring.mapped import score_mapped, target_scores

PBC = SHARED_DATA / "pbc_dev"


def _pbc() -> Path:
    if not PBC.is_dir():
        pytest.skip(f"PBC cells not found at {PBC} (../shared/data/pbc_dev)")
    return PBC


def _pbc_copy(dest: Path, per_class: int) -> Path:
    """The first ``per_class`` files of every PBC folder (neutrophils: bands and segmented)."""
    for folder in sorted(_pbc().iterdir()):
        names = sorted(p.name for p in folder.iterdir())
        if folder.name == "neutrophil":
            names = ([n for n in names if n.startswith("BNE_")][:per_class // 2 + 1]
                     + [n for n in names if n.startswith("SNE_")][:per_class // 2 + 1])
        (dest / folder.name).mkdir(parents=True)
        for n in names[:per_class + 2]:
            shutil.copy(folder / n, dest / folder.name / n)
    return dest


def _map(**sections) -> dict:
    return {"format": "hemacnn-classmap/1", "name": "test", **sections}


# --------------------------------------------------------------------------- the class map


def test_many_to_one_scoring_counts_any_mapped_class_as_correct():
    cmap = parse_class_map(_map(classes={"ig": ["PMO", "MYB", "MMZ"], "lymphocyte": "LYT",
                                         "platelet": []},
                                optional={"MMZ": None}), "test map")
    classes = ["LYT", "PMO", "MYB"]
    resolved = resolve(cmap, classes)
    assert resolved.scored == {"ig": ("PMO", "MYB"), "lymphocyte": ("LYT",)}
    assert resolved.left_out == {"platelet": LeftOut.NO_COUNTERPART}
    assert resolved.targets == ("ig", "lymphocyte")
    # Four ig cells called MYB, PMO, LYT, MYB and two lymphocytes called LYT and PMO.
    probs = np.eye(3, dtype=np.float32)[[2, 1, 0, 2, 0, 1]] * 0.8 + 0.2 / 3
    scores = target_scores(resolved, [resolved.scored[t]
                                      for t in ["ig"] * 4 + ["lymphocyte"] * 2], probs)
    assert scores.y_true.tolist() == [0, 0, 0, 0, 1, 1]  # scored in PBC's classes
    assert scores.y_pred.tolist() == [0, 0, 1, 0, 1, 0]  # each call: the folder it stands for
    m = score_mapped(scores)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["per_class"]["lymphocyte"]["recall"] == pytest.approx(1 / 2)
    assert m["per_class"]["ig"]["recall"] == pytest.approx(3 / 4)
    assert m["per_class"]["ig"]["precision"] == pytest.approx(3 / 4)  # one lymphocyte called PMO
    assert m["confusion_matrix"]["counts"] == [[3, 1], [1, 1]]


def test_prefix_rule_splits_pbc_neutrophils_and_stands_in_for_a_missing_class():
    cmap = load_class_map("matek-pbc")
    with_ngb = resolve(cmap, ["EOS", "LYT", "MON", "NGB", "NGS", "PMO"])
    assert with_ngb.label("neutrophil", "BNE_1234.jpg") == ("neutrophil/BNE_", ("NGB",))
    assert with_ngb.label("neutrophil", "SNE_99.jpg") == ("neutrophil/SNE_", ("NGS",))
    assert with_ngb.label("neutrophil", "NEUTROPHIL_7.jpg") == ("neutrophil", ("NGB", "NGS"))
    assert with_ngb.label("ig", "MY_1.jpg") == ("ig", ("PMO",))
    without_ngb = resolve(cmap, ["EOS", "LYT", "MON", "NGS", "PMO"])
    assert without_ngb.label("neutrophil", "BNE_1234.jpg") == ("neutrophil/BNE_", ("NGS",))
    assert without_ngb.label("platelet", "PLATELET_1.jpg")[1] is LeftOut.NO_COUNTERPART
    assert without_ngb.label("monocytes", "x.jpg")[1] is LeftOut.NOT_IN_MAP


def test_map_naming_a_class_the_model_lacks_is_a_one_line_error(trained_run, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(json.dumps(_map(classes={"lymphocyte": ["LYT"], "eosinophil": ["EOS"]})))
    with pytest.raises(HemacnnError, match="names EOS, which"):
        resolve(load_class_map(bad), ["BLA", "LYT", "NGS"])
    data = _pbc_copy(tmp_path / "pbc", 1)
    code = main(["evaluate", str(trained_run), "--data", str(data), "--class-map", str(bad)])
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert err.startswith("error: class map") and "EOS" in err and "optional" in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_cli_evaluate_scores_another_dataset_through_the_shipped_map(trained_run, tmp_path,
                                                                     capsys, figures):
    data = _pbc_copy(tmp_path / "pbc", 4)
    assert main(["evaluate", str(trained_run), "--data", str(data),
                 "--class-map", "matek-pbc", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    # BLA/LYT/NGS model: lymphocytes and neutrophils are scored, the rest left out and counted.
    assert "left out (not scored): basophil 6, eosinophil 6, erythroblast 6, ig 6, " \
           "monocyte 6, platelet 6" in out
    assert "basophil: no counterpart" in out and "ig: the model has none of its classes" in out
    assert "in-domain test (its classes taken together) vs this dataset" in out
    # Scored in PBC's classes: the per-class table, then the side-by-side rows.
    table = [ln for ln in out.splitlines() if ln.startswith(("lymphocyte ", "neutrophil "))]
    assert len(table) == 4 and any(ln.startswith("neutrophil (NGS) ") for ln in table)
    assert "calls of BLA (no counterpart here) count as wrong" in out
    result = json.loads((tmp_path / "out" / "evaluation_data-pbc.json").read_text())
    assert result["n"] == 6 + 6  # lymphocytes, and bands + segmented (NGS stands for both)
    assert result["classes"] == ["lymphocyte", "neutrophil", "(no counterpart)"]
    assert result["class_map"]["targets"] == {"lymphocyte": ["LYT"], "neutrophil": ["NGS"]}
    assert result["per_class"]["lymphocyte"]["support"] == 6
    assert result["per_class"]["neutrophil"]["support"] == 6
    assert result["per_class"]["lymphocyte"]["recall_ci"] is not None and "calibration" in result
    assert result["class_map"]["in_domain"]["mapped"]["per_class"]["lymphocyte"]["support"] > 0
    saved = np.load(tmp_path / "out" / "predictions_data-pbc.npz")
    model = saved["model_probs"]
    np.testing.assert_allclose(saved["probs"][:, 0], model[:, 1], rtol=1e-6)  # LYT
    np.testing.assert_allclose(saved["probs"][:, 2], model[:, 0], rtol=1e-6)  # BLA: no counterpart
    assert saved["y_pred"].tolist() == [[2, 0, 1][k] for k in model.argmax(axis=1)]
    assert (tmp_path / "out" / "plots" / "confusion_data-pbc.png").is_file()
    # The report shows the same side-by-side table from the saved file.
    md = tmp_path / "report.md"
    shutil.copy(tmp_path / "out" / "evaluation_data-pbc.json",
                trained_run / "evaluation_data-pbc-copy.json")
    try:
        assert main(["report", str(trained_run), "--out", str(md),
                     "--class-map", "matek-pbc"]) == 0
    finally:
        (trained_run / "evaluation_data-pbc-copy.json").unlink()
    text = md.read_text()
    assert "Another dataset: pbc (class map matek-pbc)" in text and "basophil 6" in text


# --------------------------------------------------------------------------- robustness options


def test_options_off_change_nothing(trained_run, matek_images):
    from hemacnn.config import Config
    from hemacnn.data.augment import stain_transform
    from hemacnn.data.colour import COLOUR_KEY, normalize_for_card
    from hemacnn.data.images import load_images
    from hemacnn.data.stain import HedJitter
    from hemacnn.inference.loading import TorchClassifier, load_checkpoint, predict_arrays
    from hemacnn.training.domain import domain_card

    assert stain_transform(48, 0.0, None, 0.0) is None  # no HED step is even added
    x = torch.randint(0, 256, (3, 48, 48), dtype=torch.uint8)
    assert torch.equal(HedJitter(0.0)(x), x)  # and sigma 0 would give every pixel back
    images = np.random.default_rng(0).integers(0, 256, (6, 48, 48, 3), dtype=np.uint8)
    entries = domain_card(Config(), ["BLA", "LYT"], images)
    assert set(entries) == {COLOUR_KEY}  # off: nothing that inference would apply
    card = json.loads((trained_run / "model_card.json").read_text())
    assert normalize_for_card(images, card) is images
    files = sorted(Path(matek_images, "LYT").rglob("*.jpg"))[:8]
    cells, _, _ = load_images(files, card)
    model, _ = load_checkpoint(trained_run)
    plain = predict_arrays(model, cells, precision="fp32")
    assert np.array_equal(TorchClassifier(trained_run, precision="fp32").probs(cells), plain)


def test_adapt_bn_re_estimates_statistics_on_the_target_images(trained_run, tmp_path):
    from hemacnn.evaluation.evaluate import evaluate_run
    from hemacnn.inference.loading import load_checkpoint
    from hemacnn.models.batchnorm import adapt_batchnorm, batchnorm_layers

    model, _ = load_checkpoint(trained_run, device="cpu", prepare=False)
    first = batchnorm_layers(model)[0]
    weight = first.weight.detach().clone()
    x = torch.rand(16, 3, 48, 48) * 0.3 + 0.6  # pale, like another stain
    found = adapt_batchnorm(model, [x[:8], x[8:]])
    assert found.adapted and found.images == 16 and found.max_change > 0
    assert not model.training and torch.equal(first.weight, weight)
    assert first.momentum is not None  # restored
    data = _pbc_copy(tmp_path / "pbc", 2)
    plain = evaluate_run(trained_run, data=data, class_map="matek-pbc", out=tmp_path / "a")
    adapted = evaluate_run(trained_run, data=data, class_map="matek-pbc", out=tmp_path / "b",
                           adapt_bn=True)
    assert plain["adapt_bn"] is None and "target images" in adapted["adapt_bn"]
    assert adapted["name"].endswith("_adaptbn")
    p = np.load(tmp_path / "a" / f"predictions_{plain['name']}.npz")["probs"]
    q = np.load(tmp_path / "b" / f"predictions_{adapted['name']}.npz")["probs"]
    assert not np.allclose(p, q)


def test_stain_options_are_recorded_in_the_card_and_applied_at_inference(matek_images,
                                                                          tmp_path, capsys):
    pytest.importorskip("torchstain", reason="stain normalisation needs torchstain")
    from factories import tiny_config
    from hemacnn.data.colour import normalize_for_card
    from hemacnn.data.images import load_images
    from hemacnn.inference.export import export_model
    from hemacnn.inference.loading import TorchClassifier, load_checkpoint, predict_arrays
    from hemacnn.inference.onnxmodel import OnnxClassifier

    run = tmp_path / "run"
    cfg = tiny_config(tmp_path / "tiny.yaml", matek_images, data={
        "classes": ["BLA", "LYT", "NGS"], "stain_norm": "reinhard", "class_map": "matek-pbc"})
    assert main(["train", str(cfg), "recipe.hed_jitter=0.05", "trainer.limit_train_batches=3",
                 "trainer.limit_val_batches=2", "--out", str(run), "--no-progress"]) == 0
    card = json.loads((run / "model_card.json").read_text())
    assert card["stain_norm"]["method"] == "reinhard"
    assert len(card["stain_norm"]["target_means"]) == 3
    assert card["hed_jitter"] == 0.05 and card["class_map"] == "matek-pbc"
    assert len(card["colour_stats"]["image_mean"]) == 3
    files = sorted(Path(matek_images, "BLA").rglob("*.jpg"))[:6]
    cells, _, _ = load_images(files, card)
    normalised = normalize_for_card(cells, card)
    assert not np.array_equal(normalised, cells)
    model, _ = load_checkpoint(run)
    expected = predict_arrays(model, normalised, precision="fp32")
    torch_probs = TorchClassifier(run, precision="fp32").probs(cells)
    np.testing.assert_array_equal(torch_probs, expected)
    assert not np.allclose(predict_arrays(model, cells, precision="fp32"), expected)
    onnx = export_model(run, tmp_path / "export")["onnx"]
    np.testing.assert_allclose(OnnxClassifier(onnx).probs(cells), expected, atol=1e-4)


# --------------------------------------------------------------------------- colour warning


def test_batch_colour_warning_for_another_labs_cells_not_for_matek_cells(trained_run,
                                                                         sample_root, tmp_path):
    from hemacnn.inference.predict import run_predict

    matek = [str(p) for c in ("BLA", "LYT", "NGS", "EOS", "MON")
             for p in sorted((sample_root / c).rglob("*.jpg"))[:6]]
    pbc = [str(p) for c in ("lymphocyte", "neutrophil", "monocyte")
           for p in sorted((_pbc() / c).glob("*.jpg"))[:8]]
    text, _ = run_predict(trained_run, matek, out=tmp_path / "m.csv", progress=False)
    assert "colour warning" not in text
    assert "colour" not in (tmp_path / "m.csv").read_text().split("\n", 1)[1]
    text, _ = run_predict(trained_run, pbc, out=tmp_path / "p.csv", progress=False)
    assert "colour warning: this batch's mean colour" in text
    rows = (tmp_path / "p.csv").read_text().splitlines()[1:]
    assert len(rows) == 24 and all(",colour" in r for r in rows)


def test_review_page_api_reports_the_batch_colour(trained_run, sample_root):
    import httpx

    from hemacnn.serve.app import create_app
    from liveserver import serving

    def post(client: httpx.Client, paths: list[Path]) -> dict:
        files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in paths]
        r = client.post("/api/predict", files=files)
        assert r.status_code == 200
        return r.json()["colour"]

    matek = [p for c in ("BLA", "LYT", "NGS") for p in sorted((sample_root / c).rglob("*.jpg"))[:3]]
    pbc = [p for c in ("lymphocyte", "monocyte") for p in sorted((_pbc() / c).glob("*.jpg"))[:4]]
    with serving(create_app(trained_run)) as url, httpx.Client(base_url=url, timeout=120) as c:
        ours, theirs = post(c, matek), post(c, pbc)
    assert not ours["far"] and ours["distance"] < 4
    assert theirs["far"] and theirs["message"].startswith("colour warning")


def test_mapped_evaluate_explains_the_shift_and_adapts_on_every_image(trained_run, tmp_path,
                                                                      capsys):
    # PBC-like folders: lymphocytes are scored; basophils and eosinophils have no counterpart in
    # a BLA/LYT/NGS model, so only their images (no usable label) widen the adaptation pool.
    data = image_folder(tmp_path / "pbc", {"lymphocyte": 6, "basophil": 4, "eosinophil": 4})
    assert main(["evaluate", str(trained_run), "--data", str(data), "--class-map", "matek-pbc",
                 "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "class map matek-pbc (shipped), scored" in out and "matek-pbc (matek-pbc" not in out
    assert re.search(r"lymphocyte was mostly called \w+ \(\d of 6\)|its own model classes", out)
    assert re.search(r"colour( warning)?: .*spreads from the training", out)
    result = json.loads((tmp_path / "a" / "evaluation_data-pbc.json").read_text())
    assert result["colour"]["distance"] > 0
    if result["colour"]["far"]:
        assert "try --adapt-bn" in out
    assert main(["evaluate", str(trained_run), "--data", str(data), "--class-map", "matek-pbc",
                 "--adapt-bn", "--out", str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "on all 14 images given, labelled or not (not only the 6 scored)" in out
    assert re.search(r"macro F1 before adaptation \d\.\d{3}, after \d\.\d{3}", out)
    assert re.search(r"largest change in a class probability: \d\.\d\d", out)
    assert "raw network units" in out and "try --adapt-bn" not in out
    adapted = json.loads((tmp_path / "b" / "evaluation_data-pbc_adaptbn.json").read_text())
    a = adapted["adaptation"]
    assert a["images"] == 14 and a["scored"] == adapted["n"] == 6
    assert a["macro_f1_before"] == pytest.approx(result["macro_f1"])
    assert a["macro_f1_after"] == adapted["macro_f1"] and 0 < a["max_probability_change"] <= 1
