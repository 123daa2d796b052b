"""Shared fixtures: the real Matek images in ../shared/data (skipped with a reason when absent),
synthetic images, and reference runs trained once per session for the tests that read them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

# As the `hemacnn` command does (cli.main): the tests train in this process, on huge pages.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
# Mechanics tests skip a run's PNG figures (about 0.3 s each, five per training); the tests of
# the figures themselves ask for them with the `figures` fixture, and `tiny_run` draws them.
os.environ.setdefault("HEMACNN_FIGURES", "0")

from factories import cell_folder, onecycle_config, trainer_config

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("HEMACNN_SHARED_DATA", REPO.parent / "shared" / "data"))
SAMPLE_ROOT = SHARED_DATA / "bm_sample" / "BM_cytomorphology_data"
CORRUPT_ROOT = SHARED_DATA / "bm_corrupt"
SHARED_WEIGHTS = Path(os.environ.get("HEMACNN_SHARED_WEIGHTS",
                                     REPO.parent / "shared" / "weights"))


def _require(path: Path) -> Path:
    if not path.is_dir():
        pytest.skip(
            f"real Matek images not found at {path} (they live in ../shared/data beside the "
            "repository; set HEMACNN_SHARED_DATA to point elsewhere)"
        )
    return path


@pytest.fixture(scope="session")
def sample_root() -> Path:
    """The 2,440-image real sample laid out like the full Matek download."""
    return _require(SAMPLE_ROOT)


@pytest.fixture(scope="session")
def corrupt_root() -> Path:
    """Four real Matek files with visible corruption that no decoder reports."""
    return _require(CORRUPT_ROOT)


@pytest.fixture(scope="session")
def shared_weights() -> Path:
    """Real ImageNet MobileNetV2 state dicts (timm and torchvision; BatchNorm folded)."""
    if not (SHARED_WEIGHTS / "mobilenet_v2_imagenet_timm.pth").is_file():
        pytest.skip(
            f"real ImageNet weights not found at {SHARED_WEIGHTS} (they live in ../shared/weights "
            "beside the repository; set HEMACNN_SHARED_WEIGHTS to point elsewhere)"
        )
    return SHARED_WEIGHTS


@contextmanager
def _session_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The test cache for a session fixture (the autouse cache fixture is not up there)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HEMACNN_CACHE", str(tmp_path_factory.getbasetemp() / "hemacnn-cache"))
        yield


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Keep every test's caches out of the user's home folder (one cache per test session)."""
    monkeypatch.setenv("HEMACNN_CACHE", str(tmp_path_factory.getbasetemp() / "hemacnn-cache"))


@pytest.fixture(scope="session")
def matek_images() -> Path:
    """Real Matek images with BLA, LYT and NGS folders: the shared sample where it is present,
    else the demo sample shipped inside the package (so a fresh clone runs these tests too)."""
    if SAMPLE_ROOT.is_dir():
        return SAMPLE_ROOT
    from hemacnn.demo import sample_root

    return sample_root()


@pytest.fixture()
def figures(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run figures drawn, as for a user (the suite skips them elsewhere)."""
    monkeypatch.setenv("HEMACNN_FIGURES", "1")


@pytest.fixture(scope="session")
def trained_run(sample_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real trained quick run (MV3 quarter width, 48 px, 2 epochs, BLA/LYT/NGS): ~25 s once.

    Shared by the predict, export, explain and serve tests, which need a model that has learnt
    something from real cells (an untrained one gives near-ties that say nothing).
    """
    from hemacnn.cli import main

    run = tmp_path_factory.mktemp("trained") / "run"
    with _session_cache(tmp_path_factory):
        code = main(["train", str(REPO / "configs" / "quick.yaml"), f"data.root={sample_root}",
                     "data.classes=[BLA,LYT,NGS]", "data.image_size=48",
                     "trainer.max_epochs=2", "trainer.export=never",  # (the tests export it)
                     "--out", str(run), "--no-progress"])
    assert code == 0, "training the shared test model failed"
    return run


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three classes of 48 px JPEGs told apart by colour and texture (mechanics only)."""
    return cell_folder(tmp_path_factory.mktemp("synthetic"))


@pytest.fixture(scope="session")
def tiny_run(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run of :func:`factories.trainer_config` (two epochs), trained once: tests
    that only read it share it (seconds)."""
    from hemacnn.training.train import train

    base = tmp_path_factory.mktemp("tiny_run")
    with _session_cache(tmp_path_factory), pytest.MonkeyPatch.context() as mp:
        mp.setenv("HEMACNN_FIGURES", "1")  # the run folder test checks a user's whole folder
        return train(trainer_config(base, synthetic_root), out=base / "run", progress=False)


@pytest.fixture(scope="session")
def onecycle_reference(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run of :func:`factories.onecycle_config`: what every interrupted and
    resumed run of that config must equal."""
    from hemacnn.training.train import train

    base = tmp_path_factory.mktemp("onecycle")
    with _session_cache(tmp_path_factory):
        return train(onecycle_config(base, synthetic_root), out=base / "reference",
                     progress=False)
