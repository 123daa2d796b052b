"""Every shipped study file (configs/studies/) loads, expands to the paper's points under each
profile, and every point's config validates (pycls style: shipped configs are test cases)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hemacnn.studies import expand_points, load_study
from hemacnn.studies.spec import FIGURE_KINDS, claims_of

STUDIES = Path(__file__).resolve().parents[1] / "configs" / "studies"
USABLE = {"ART", "BLA", "EOS", "LYT", "MON", "NGS", "NIF", "PMO"}  # >= 170 sample images

# The points each study must have (PAPER.md sections in the study files), in order.
EXPECTED = {
    "optimizers": [f"adadelta-rho{r}" for r in (0.5, 0.6, 0.7, 0.8, 0.9)]
    + [f"adam-beta1-{b}" for b in (0.7, 0.8, 0.85, 0.9, 0.97)],
    "lr_noise": ["lr0.003", "lr0.001", "lr0.0001", "lr0.0001-noise"],
    "regularization": ["plain", "noise", "noise-l2"],
    "input_size": {"paper": ["px250", "px128", "px64"], "cpu": ["px128", "px64", "px48"]},
    "balancing": ["mv2", "mv2-rotated", "mv2mod-rotated"],
    "architectures": ["mv1", "mv2", "mv3", "mv3-nonoise", "vgg16"],
}


def test_every_study_file_is_listed() -> None:
    assert sorted(p.stem for p in STUDIES.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("profile", ["paper", "cpu"])
@pytest.mark.parametrize("study", sorted(EXPECTED))
def test_study_expands_and_validates(study: str, profile: str) -> None:
    spec = load_study(STUDIES / f"{study}.yaml")
    runs = expand_points(spec, profile, ["data.root=/data"])  # raises on any invalid point
    points = [p for p in runs if p.seed == 0]
    want = EXPECTED[study]
    assert [p.name for p in points] == (want[profile] if isinstance(want, dict) else want)
    assert {p.config.seed for p in points} == {0}  # one split and the same initial weights
    seeds = 3 if profile == "cpu" else 1  # the cpu profiles' verdicts need an interval
    more = spec.profiles[profile].point_seeds if profile in spec.profiles else {}
    assert len(runs) == sum(more.get(p.name, seeds) for p in points)
    assert all(n > seeds for n in more.values())  # more seeds where a verdict needs them
    assert {p.config.data.split_seed for p in runs if p.seed} <= {0}  # and the same split
    claims = claims_of(spec, profile)
    assert claims and all(set(c.points()) <= {p.name for p in points} for c in claims)
    metrics = {m for c in claims for m in c.metric_list()}
    if profile == "cpu":  # a claim's metric is one this profile's classes produce
        codes = set(points[0].config.data.classes)
        assert all(m.removeprefix("f1_") in codes for m in metrics if m.startswith("f1_"))
    assert all(p.config.data.root == "/data" for p in points)
    assert all(f["kind"] in FIGURE_KINDS for f in spec.figures) and spec.figures
    if profile == "cpu":  # sized for the shared sample on a 2-core CPU
        assert {p.config.trainer.precision for p in runs} == {"32"}  # the same on every CPU
        for p in points:
            assert set(p.config.data.classes) <= USABLE, p.name
            assert p.config.model.width <= 0.25 and p.config.trainer.max_epochs <= 20, p.name
            assert p.config.data.image_size <= 134, p.name
    else:
        assert all("NGB" in p.config.data.classes for p in points)


def test_the_papers_claims_are_stated() -> None:
    """At least nine claims of sections IV-C, IV-E, IV-F and V, each a distinct id."""
    claims = [c for s in EXPECTED for c in load_study(STUDIES / f"{s}.yaml").claims]
    assert len(claims) >= 9 and len({c.id for c in claims}) == len(claims)
    assert {c.section for c in claims} == {"IV-C", "IV-E", "IV-F", "V"}


def test_optimizer_points_follow_iv_f() -> None:
    points = {p.name: p.config for p in expand_points(load_study(STUDIES / "optimizers.yaml"))}
    ada, adam = points["adadelta-rho0.7"].optimizer, points["adam-beta1-0.85"].optimizer
    assert (ada.name, ada.lr, ada.rho) == ("adadelta", 0.1, 0.7)
    assert (adam.name, adam.lr, adam.beta1, adam.beta2) == ("adam", 0.001, 0.85, 0.999)
    assert ada.eps == adam.eps == 1e-7  # Keras' default epsilon (the paper is silent)
    assert adam.rho == 0.95  # no value leaks from one point into the next (a shared base tree)
    t = points["adam-beta1-0.85"].trainer
    assert (t.max_epochs, t.log_step_loss, t.limit_train_batches) == (1, True, 250)


def test_balancing_cpu_profile_rotates_the_samples_rarest_usable_class() -> None:
    spec = load_study(STUDIES / "balancing.yaml")
    cpu = {p.name: p.config.data for p in expand_points(spec, "cpu")}
    assert cpu["mv2"].offline_rotate == [] and cpu["mv2-rotated"].offline_rotate == ["ART"]
    assert "ART" in spec.profiles["cpu"].note
    paper = {p.name: p.config for p in expand_points(spec, "paper")}
    assert paper["mv2mod-rotated"].data.offline_rotate == ["NGB"]
    assert paper["mv2mod-rotated"].model.name == "mv2mod"


# Issue 29's missing statements, each a claim id of the study that holds its points.
MISSING_STATEMENTS = {
    "architectures": ["mv2-beats-mv1", "mv3-class-order", "mv3-beats-matek", "mv3-raises-ngb-f1"],
    "input_size": ["downsampling-improves-accuracy", "downsampling-cuts-epoch-time"],
    "balancing": ["mv2mod-keeps-other-classes"],
    "lr_noise": ["lr0.003-overfits", "lr0.003-overfits-from-epoch-10", "table5-effect-sizes"],
    "regularization": ["noise-reduces-overfitting", "noise-does-not-remove-overfitting"],
}


@pytest.mark.parametrize("profile", ["paper", "cpu"])
def test_the_issue_29_statements_are_claims(profile: str) -> None:
    for study, ids in MISSING_STATEMENTS.items():
        claims = {c.id: c for c in claims_of(load_study(STUDIES / f"{study}.yaml"), profile)}
        assert set(ids) <= set(claims), study
        for c in claims.values():  # an untested claim says why; a decided one how
            assert c.kind != "untested" or c.reason
    size = {c.id: c for c in claims_of(load_study(STUDIES / "input_size.yaml"), profile)}
    assert size["px64-not-below-px128"].kind == "equivalent"  # an invariance claim: TOST
    assert size["px64-not-below-px128"].margin == 0.02
    opt = {c.id: c for c in claims_of(load_study(STUDIES / "optimizers.yaml"), profile)}
    assert opt["adam-beta1-below-0.9"].targets() == [
        "adam-beta1-0.7", "adam-beta1-0.8", "adam-beta1-0.85"]  # every beta1 below 0.9
    arch = {c.id: c for c in claims_of(load_study(STUDIES / "architectures.yaml"), profile)}
    assert len(arch["vgg16-beats-mv3"].metric_list()) == 4  # every class


def test_regularization_shares_lr_noise_runs_under_cpu() -> None:
    """plain and noise are lr_noise's lr0.0001 points: the same configs but the run name."""
    reg = expand_points(load_study(STUDIES / "regularization.yaml"), "cpu", ["data.root=/d"])
    lrn = {p.name: p.config for p in expand_points(load_study(STUDIES / "lr_noise.yaml"), "cpu",
                                                   ["data.root=/d"])}
    shared = {p.name: p.shared for p in reg if p.shared and p.seed == 0}
    assert shared == {"plain": "lr_noise/lr0.0001", "noise": "lr_noise/lr0.0001-noise"}
    for p in reg:
        if p.shared and p.seed == 0:
            theirs = lrn[p.shared.split("/")[1]].model_dump()
            mine = p.config.model_dump()
            assert {**mine, "name": ""} == {**theirs, "name": ""}, p.name
