"""`hemacnn sweep --seeds N`: every point under N seeds, each with its own initial weights and
batch order on one split; the summary's mean, sd and 95% interval over seeds."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from factories import read_csv, two_class_folder, write_study
from hemacnn.cli import main
from hemacnn.data.datamodule import HemaDataModule
from hemacnn.errors import HemacnnError
from hemacnn.studies import expand_points, load_study
from hemacnn.training.train import make_card


@pytest.fixture(scope="module")
def two_class_root(tmp_path_factory) -> Path:
    return two_class_folder(tmp_path_factory.mktemp("sweepdata"))


def initial_state(cfg, root):
    """What train() builds before the first step, in train()'s order: seed, data, model."""
    from hemacnn.training.train import CellClassifier

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = HemaDataModule(cfg, None, False)
    dm.prepare_data()
    dm.setup("fit")
    card = make_card(cfg, dm.class_codes, dm.manifest_hash, str(root))
    module = CellClassifier(card, cfg)
    weights = torch.cat([p.detach().flatten() for p in module.parameters()])
    order = list(iter(dm.train_dataloader().sampler))
    return dm.splits, weights, order


def test_each_seed_has_its_own_weights_and_batch_order_on_one_split(tmp_path, two_class_root):
    study = write_study(tmp_path, {"optimizer.lr": [0.003, 0.001]}, seeds=3)
    points = expand_points(load_study(study), overrides=[f"data.root={two_class_root}"])
    assert [(p.name, p.point, p.seed, p.config.seed, p.config.data.split_seed)
            for p in points] == [
        ("lr0.003", "lr0.003", 0, 3, None), ("lr0.003-seed1", "lr0.003", 1, 4, 3),
        ("lr0.003-seed2", "lr0.003", 2, 5, 3), ("lr0.001", "lr0.001", 0, 3, None),
        ("lr0.001-seed1", "lr0.001", 1, 4, 3), ("lr0.001-seed2", "lr0.001", 2, 5, 3)]
    states = [initial_state(p.config, two_class_root) for p in points[:3]]
    splits = [s for s, _, _ in states]
    assert all(s.train == splits[0].train and s.val == splits[0].val and s.test == splits[0].test
               for s in splits)  # one split for every seed
    for i in range(3):
        for j in range(i + 1, 3):
            assert not torch.equal(states[i][1], states[j][1])  # other initial weights
            assert states[i][2] != states[j][2]  # other batch order
            assert sorted(states[i][2]) == sorted(states[j][2])  # of the same images
    # The study can ask for a split per seed instead.
    tree = yaml.safe_load(study.read_text())
    study.write_text(yaml.safe_dump({**tree, "split_per_seed": True}))
    other = expand_points(load_study(study), overrides=[f"data.root={two_class_root}"])
    assert other[1].config.data.split_seed is None and other[1].config.seed == 4
    # --seeds on the command line beats the file's seeds.
    assert len(expand_points(load_study(study), seeds=1)) == 2


def test_sweep_with_seeds_summarises_over_seeds(tmp_path, two_class_root, capsys):
    study = write_study(tmp_path, {"optimizer.lr": [0.003, 0.001]})
    out = tmp_path / "out"
    assert main(["sweep", str(study), "--out", str(out), "--no-progress", "--seeds", "2",
                 f"data.root={two_class_root}"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "4 of 4 points to run"
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert runs == ["lr0.001", "lr0.001-seed1", "lr0.003", "lr0.003-seed1"]
    for point in ("lr0.003", "lr0.001"):
        a, b = out / "runs" / point, out / "runs" / f"{point}-seed1"
        for name in ("train", "val", "test"):
            assert (a / "splits" / f"{name}.csv").read_text() == \
                (b / "splits" / f"{name}.csv").read_text()
        assert (a / "step_loss.csv").read_text() != (b / "step_loss.csv").read_text()
    rows = read_csv(out / "summary.csv")
    assert [(r["point"], r["seeds"]) for r in rows] == [("lr0.003", "2"), ("lr0.001", "2")]
    seeds = read_csv(out / "summary_seeds.csv")
    assert [(r["point"], r["run"], r["seed"]) for r in seeds] == [
        ("lr0.003", "lr0.003", "3"), ("lr0.003", "lr0.003-seed1", "4"),
        ("lr0.001", "lr0.001", "3"), ("lr0.001", "lr0.001-seed1", "4")]
    x = [float(r["final_train_loss"]) for r in seeds[:2]]
    assert float(rows[0]["final_train_loss"]) == pytest.approx(sum(x) / 2,
                                                                            rel=1e-5)
    assert float(rows[0]["final_train_loss_sd"]) == pytest.approx(
        abs(x[0] - x[1]) / 2 ** 0.5, rel=1e-4)
    assert "Seeds per point: 2" in (out / "summary.md").read_text()


def test_a_profile_gives_some_points_more_seeds_and_names_only_real_points(tmp_path,
                                                                          two_class_root):
    study = write_study(tmp_path, {"optimizer.lr": [0.003, 0.001]}, seeds=2,
                        profiles={"cpu": {"point_seeds": {"lr0.001": 4}}})
    over = [f"data.root={two_class_root}"]
    points = expand_points(load_study(study), "cpu", overrides=over)
    assert [(p.point, p.seed) for p in points] == [
        ("lr0.003", 0), ("lr0.003", 1), ("lr0.001", 0), ("lr0.001", 1), ("lr0.001", 2),
        ("lr0.001", 3)]
    assert points[-1].name == "lr0.001-seed3" and points[-1].config.seed == 6
    # --seeds N on the command line sets every point to N.
    assert len(expand_points(load_study(study), "cpu", overrides=over, seeds=1)) == 2
    tree = yaml.safe_load(study.read_text())
    tree["profiles"]["cpu"]["point_seeds"] = {"lr0.01": 4}
    study.write_text(yaml.safe_dump(tree))
    with pytest.raises(HemacnnError, match="point_seeds names 'lr0.01', which is not a point"):
        expand_points(load_study(study), "cpu", overrides=over)
