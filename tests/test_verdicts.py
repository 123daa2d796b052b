"""Claims' verdicts on made-up numbers, the degenerate-run detector, and the summary built from a
made-up study folder of raw files only (what docs/results/<study>/runs/ holds)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from scipy.stats import t as student_t

from hemacnn.cli import main
from hemacnn.errors import HemacnnError
from hemacnn.studies import expand_points, load_study
from hemacnn.studies.summary import RAW_FILES, copy_raw_files, write_summary
from hemacnn.studies.sweep import check_shared, refresh_record, study_record
from hemacnn.studies.verdicts import (
    ClaimSpec,
    RunHealth,
    Verdict,
    evaluate_claim,
    holm,
    interval,
    majority_baseline,
    run_health,
)


def claim(**kw) -> ClaimSpec:
    return ClaimSpec.model_validate({"id": "c", "text": "t", "metric": "loss", **kw})


LOWER = {"kind": "lower", "a": "A", "b": "B"}


def by_seed(*xs: float) -> dict[int, float]:
    return dict(enumerate(xs))


def loss(**points: dict[int, float]) -> dict:
    """Per-seed values of the metric ``loss`` (metric -> point -> seed -> value)."""
    return {"loss": points}


@pytest.mark.parametrize(("a", "b", "verdict"), [
    # A lower than B by 0.10 in every seed, with little spread: the interval excludes 0.
    ((1.00, 1.01, 0.99), (1.10, 1.11, 1.09), Verdict.AGREES),
    # A higher than B in every seed: decided the other way.
    ((1.20, 1.21, 1.19), (1.10, 1.11, 1.09), Verdict.DISAGREES),
    # Means differ by 0.01 but the paired differences swing +-0.2: the interval holds 0.
    ((1.00, 1.30, 0.75), (1.10, 1.10, 1.10), Verdict.INCONCLUSIVE),
    # One seed: no interval, whatever the difference.
    ((1.0,), (2.0,), Verdict.INCONCLUSIVE),
])
def test_lower_claim_verdicts(a, b, verdict):
    result = evaluate_claim(claim(**LOWER), loss(A=by_seed(*a), B=by_seed(*b)))
    assert result.verdict == verdict, result.detail
    assert result.detail.startswith("A - B: ")


def test_detail_states_the_test_and_its_p_value():
    result = evaluate_claim(claim(**LOWER), loss(A=by_seed(1.0, 1.01, 0.99),
                                                 B=by_seed(1.1, 1.11, 1.09)))
    assert "paired t over 3 seeds" in result.detail and ", p < 0.001" in result.detail


def test_interval_is_the_t_interval():
    mean, sd, half = interval([1.0, 2.0, 3.0])
    assert (mean, sd) == (2.0, 1.0)
    assert half == pytest.approx(4.302653 / 3 ** 0.5, rel=1e-6)  # t(0.975, 2) sd / sqrt(3)
    assert interval([5.0]) == (5.0, None, None)


def test_holm_adjustment():
    # Sorted p 0.01, 0.02, 0.04 -> 3 * 0.01, max(0.03, 2 * 0.02), max(0.04, 1 * 0.04).
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1


def test_higher_claim_is_the_mirror_of_lower():
    values = loss(A=by_seed(0.8, 0.82, 0.81), B=by_seed(0.5, 0.52, 0.49))
    assert evaluate_claim(claim(kind="higher", a="A", b="B"), values).verdict == Verdict.AGREES
    assert evaluate_claim(claim(kind="lower", a="A", b="B"), values).verdict == \
        Verdict.DISAGREES


def test_pairs_by_seed_not_by_pooled_spread():
    # Seeds move both points together (large spread across seeds), A is always 0.05 lower:
    # paired differences are constant, so the claim is decided.
    a, b = by_seed(1.0, 1.5, 2.0), by_seed(1.05, 1.55, 2.05)
    assert evaluate_claim(claim(**LOWER), loss(A=a, B=b)).verdict == Verdict.AGREES


def test_unequal_seed_counts_compare_all_seeds_by_welchs_t():
    a = by_seed(1.0, 1.01, 0.99, 1.02, 0.98)  # five seeds against three
    result = evaluate_claim(claim(**LOWER), loss(A=a, B=by_seed(1.1, 1.11, 1.09)))
    assert result.verdict == Verdict.AGREES and result.seeds == 3
    assert "Welch t over 5/3 seeds" in result.detail
    # Welch's t by hand: means 1.0 and 1.15, variances 0.0055/5 and 0.0025/3.
    spread = evaluate_claim(claim(**LOWER), loss(A=by_seed(1.0, 1.05, 0.95, 1.1, 0.9),
                                                 B=by_seed(1.1, 1.2, 1.15)))
    va, vb = 0.00625 / 5, 0.0025 / 3
    df = (va + vb) ** 2 / (va ** 2 / 4 + vb ** 2 / 2)
    p = 2 * student_t.sf(0.15 / (va + vb) ** 0.5, df)
    assert 0.001 < p < 0.05 and f"p = {p:.3g}" in spread.detail, spread.detail
    # The extra seeds count: pairing the three common seeds of a noisy point decides nothing,
    # all fifteen of it against three do.
    noisy = by_seed(1.0, 1.6, 0.7, *[0.9 + 0.02 * k for k in range(12)])
    three = by_seed(1.2, 1.3, 1.25)
    assert evaluate_claim(claim(**LOWER), loss(A=dict(list(noisy.items())[:3]), B=three)
                          ).verdict == Verdict.INCONCLUSIVE
    assert evaluate_claim(claim(**LOWER), loss(A=noisy, B=three)).verdict == Verdict.AGREES


def test_lowest_among():
    spec = claim(kind="lowest", among=["X", "Y", "Z"], expect="Y")
    good = loss(X=by_seed(1.2, 1.21, 1.19), Y=by_seed(1.0, 1.01, 0.99),
                Z=by_seed(1.1, 1.12, 1.09))
    assert evaluate_claim(spec, good).verdict == Verdict.AGREES
    beaten = loss(**{**good["loss"], "Z": by_seed(0.9, 0.91, 0.89)})  # Z decidedly lower
    result = evaluate_claim(spec, beaten)
    assert result.verdict == Verdict.DISAGREES and "Y - Z: +0.1" in result.detail
    tie = loss(**{**good["loss"], "Z": by_seed(1.05, 0.95, 1.0)})  # Y vs Z undecided
    assert evaluate_claim(spec, tie).verdict == Verdict.INCONCLUSIVE


def test_holm_turns_one_lone_raw_disagreement_inconclusive():
    """The issue's case: expect against four points, one of them lower with raw p ~0.03 (a
    'disagrees' without correction), the rest undecided: Holm over 4 leaves it undecided."""
    spec = claim(kind="lowest", among=["E", "P", "Q", "R", "S"], expect="E")
    values = loss(E=by_seed(1.0, 1.0, 1.0), P=by_seed(0.97, 0.975, 0.955),  # E - P ~ +0.033
                  Q=by_seed(1.2, 0.8, 1.1), R=by_seed(0.9, 1.2, 1.0), S=by_seed(1.3, 0.9, 1.0))
    result = evaluate_claim(spec, values)
    raw = float(result.detail.split("E - P: ")[1].split("p = ")[1].split(" ")[0])
    assert 0.01 < raw < 0.05  # decided before the correction
    assert result.verdict == Verdict.INCONCLUSIVE, result.detail
    assert "Holm over 4 comparisons" in result.detail


def test_every_a_against_b_with_a_row_each():
    spec = claim(kind="lower", a=["A1", "A2"], b="B", rows="each")
    values = loss(A1=by_seed(1.0, 1.01, 0.99), A2=by_seed(1.05, 1.3, 0.8),
                  B=by_seed(1.1, 1.11, 1.09))
    result = evaluate_claim(spec, values)
    assert result.verdict == Verdict.INCONCLUSIVE  # A2's difference is undecided
    assert [(r.row_id, r.verdict) for r in result.rows] == [
        ("c:A1", Verdict.AGREES), ("c:A2", Verdict.INCONCLUSIVE)]


def test_every_class_gets_a_row_and_the_claim_needs_them_all():
    spec = ClaimSpec.model_validate({"id": "v", "text": "t", "kind": "higher", "a": "A",
                                     "b": "B", "metrics": ["f1_X", "f1_Y"], "rows": "each"})
    x = {"A": by_seed(0.9, 0.91, 0.89), "B": by_seed(0.5, 0.52, 0.49)}
    y_same = {"A": by_seed(0.6, 0.8, 0.5), "B": by_seed(0.6, 0.6, 0.6)}
    result = evaluate_claim(spec, {"f1_X": x, "f1_Y": y_same})
    assert result.verdict == Verdict.INCONCLUSIVE
    assert {r.row_id: r.verdict for r in result.rows} == {"v:f1_X": Verdict.AGREES,
                                                          "v:f1_Y": Verdict.INCONCLUSIVE}
    y_better = {"A": by_seed(0.7, 0.71, 0.69), "B": by_seed(0.5, 0.51, 0.49)}
    assert evaluate_claim(spec, {"f1_X": x, "f1_Y": y_better}).verdict == Verdict.AGREES


@pytest.mark.parametrize(("a", "verdict"), [
    ((1.001, 0.999, 1.0, 1.002, 0.998), Verdict.AGREES),        # within +-0.02, tightly
    ((1.10, 1.11, 1.09, 1.10, 1.105), Verdict.DISAGREES),       # 0.1 above: outside the margin
    ((1.00, 1.08, 0.93, 1.05, 0.95), Verdict.INCONCLUSIVE),     # too wide to tell
])
def test_equivalence_by_two_one_sided_tests(a, verdict):
    spec = claim(kind="equivalent", a="A", b="B", margin=0.02)
    result = evaluate_claim(spec, loss(A=by_seed(*a), B=by_seed(*[1.0] * 5)))
    assert result.verdict == verdict, result.detail
    assert "90% interval" in result.detail and "TOST" in result.detail


def test_against_a_constant_and_a_relative_change():
    above = claim(kind="higher", a="A", value=0.5)
    assert evaluate_claim(above, loss(A=by_seed(0.7, 0.71, 0.69))).verdict == Verdict.AGREES
    # Relative change A / B - 1 = -0.20 in every seed, the paper's -0.21 within +-0.05.
    effect = claim(kind="equivalent", relative=True, a="A", b="B", value={"A": -0.21},
                   margin=0.05)
    values = loss(A=by_seed(0.8, 0.4, 1.6), B=by_seed(1.0, 0.5, 2.0))
    result = evaluate_claim(effect, values)
    assert result.verdict == Verdict.AGREES and "A / B - 1: -0.2" in result.detail


def test_order_within_one_point():
    spec = ClaimSpec.model_validate({"id": "o", "text": "t", "kind": "order", "a": "M",
                                     "order": ["f1_X", "f1_Y", "f1_Z"]})
    values = {"f1_X": {"M": by_seed(0.9, 0.91, 0.89)}, "f1_Y": {"M": by_seed(0.7, 0.71, 0.69)},
              "f1_Z": {"M": by_seed(0.5, 0.52, 0.49)}}
    assert evaluate_claim(spec, values).verdict == Verdict.AGREES
    values["f1_Z"] = {"M": by_seed(0.8, 0.82, 0.79)}  # Z decidedly above Y
    assert evaluate_claim(spec, values).verdict == Verdict.DISAGREES


def test_an_untested_claim_says_why():
    spec = ClaimSpec.model_validate({"id": "u", "text": "t", "kind": "untested",
                                     "reason": "the sample has one NGB image"})
    result = evaluate_claim(spec, {})
    assert result.verdict == Verdict.NOT_TESTED and result.detail == "the sample has one NGB image"


def test_a_degenerate_point_leaves_the_claim_not_tested():
    values = loss(A=by_seed(1.0, 1.01, 0.99), B=by_seed(1.1, 1.11, 1.09))
    sick = {"B": RunHealth(True, ["seed 1: predicts 2 of 4 classes on test (NGS, LYT)"])}
    result = evaluate_claim(claim(**LOWER), values, sick)
    assert result.verdict == Verdict.NOT_TESTED and result.degenerate == ["B"]
    assert "B: seed 1: predicts 2 of 4 classes on test (NGS, LYT)" in result.detail
    # A healthy entry changes nothing.
    assert evaluate_claim(claim(**LOWER), values, {"B": RunHealth(False)}).verdict == \
        Verdict.AGREES
    # A claim that says why a degenerate seed does not matter to it is tested, and says so.
    timing = claim(**LOWER, ignore_degenerate="time per epoch")
    result = evaluate_claim(timing, values, sick)
    assert result.verdict == Verdict.AGREES and "kept: time per epoch" in result.detail
    # degenerate_ok keeps only the named points' degenerate seeds (the weaker model of a
    # "beats" claim): B's are kept, a degenerate A still leaves the claim not tested.
    beats = claim(**LOWER, ignore_degenerate="B failing is the claim", degenerate_ok=["B"])
    assert evaluate_claim(beats, values, sick).verdict == Verdict.AGREES
    both = {**sick, "A": RunHealth(True, ["seed 0: predicts 1 of 4 classes on test (LYT)"])}
    result = evaluate_claim(beats, values, both)
    assert result.verdict == Verdict.NOT_TESTED and result.degenerate == ["A"]


def test_claim_spec_is_checked():
    with pytest.raises(ValueError, match="needs points a and b"):
        claim(kind="lower", a="A")
    with pytest.raises(ValueError, match="is not among"):
        claim(kind="lowest", among=["A", "B"], expect="C")
    with pytest.raises(ValueError, match="extra"):
        claim(**LOWER, oops=1)
    with pytest.raises(ValueError, match="needs a margin"):
        claim(kind="equivalent", a="A", b="B")
    with pytest.raises(ValueError, match="needs a reason"):
        claim(kind="untested")


def test_majority_baseline():
    base = majority_baseline({"A": 60, "B": 30, "C": 10, "D": 0})  # D absent: left out
    assert base["baseline_accuracy"] == pytest.approx(0.6)
    assert base["baseline_macro_f1"] == pytest.approx((2 * 0.6 / 1.6) / 3)
    assert base["prior_loss"] == pytest.approx(-(0.6 * -0.5108256 + 0.3 * -1.2039728
                                                 + 0.1 * -2.3025851), rel=1e-6)


def per_class(predicted: dict[str, int], f1: dict[str, float], support: int = 10) -> dict:
    return {c: {"predicted": predicted[c], "support": support, "f1": f1[c]} for c in predicted}


def test_degenerate_detector():
    learnt = {"macro_f1": 0.7, "per_class": per_class({"A": 9, "B": 11, "C": 5, "D": 5},
                                                      dict.fromkeys("ABCD", .7))}
    assert run_health(learnt) == RunHealth(False, [], [])
    # Three of four classes: not degenerate, but the class it never predicts is listed.
    three = {"macro_f1": 0.5, "per_class": per_class({"A": 9, "B": 11, "C": 10, "D": 0},
                                                     {"A": .7, "B": .7, "C": .6, "D": 0})}
    assert run_health(three) == RunHealth(False, [], ["D"])
    # Two of four (at most half the classes) on the scored checkpoint's test predictions.
    two = {"macro_f1": 0.4, "per_class": per_class({"A": 20, "B": 20, "C": 0, "D": 0},
                                                   {"A": .8, "B": .8, "C": 0, "D": 0})}
    health = run_health(two)
    assert health.degenerate and health.unpredicted == ["C", "D"]
    assert health.reasons == ["predicts 2 of 4 classes on test (A, B)"]
    one = {"macro_f1": 0.1666,
           "per_class": per_class({"A": 30, "B": 0, "C": 0}, {"A": .5, "B": 0, "C": 0})}
    health = run_health(one)
    assert health.degenerate
    assert health.reasons[0] == "predicts 1 of 3 classes on test (A)"
    assert "not above the majority class's 0.167" in health.reasons[1]
    # Two of three classes predicted, but no better than always saying the majority class.
    weak = {"macro_f1": 0.15,
            "per_class": per_class({"A": 25, "B": 5, "C": 0}, {"A": .4, "B": .05, "C": 0})}
    assert run_health(weak).reasons == ["test macro-F1 0.150 not above the majority class's "
                                        "0.167"]


# --- a made-up study folder: summary, verdicts and --report from raw files alone ---

def fake_run(run: Path, seed: int, lr: float, losses: list[float], f1: float,
             one_class: bool = False) -> None:
    """The raw files of one run folder (what a study folder keeps under docs/results)."""
    run.mkdir(parents=True)
    cfg = {"name": run.name, "seed": seed, "optimizer": {"name": "adam", "lr": lr, "beta1": 0.9,
                                                          "beta2": 0.999, "rho": 0.95}}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    head = "epoch,train_loss,train_acc,val_loss,val_acc,val_recall_A,val_recall_B,time_s\n"
    rows = [f"{i},{v + 0.1},0.5,{v},0.6,{0 if one_class else 0.5},0.5,1.5"
            for i, v in enumerate(losses)]
    (run / "metrics.csv").write_text(head + "\n".join(rows) + "\n")
    steps = "step,epoch,loss\n" + "".join(f"{i},{i // 2},{losses[i // 2] + 0.2}\n"
                                          for i in range(2 * len(losses)))
    (run / "step_loss.csv").write_text(steps)
    pred = {"A": 0, "B": 20} if one_class else {"A": 10, "B": 10}
    (run / "test_metrics.json").write_text(json.dumps({
        "accuracy": f1, "macro_f1": 0.333 if one_class else f1,
        "per_class": {c: {"f1": f1, "support": 10, "predicted": pred[c]} for c in "AB"}}))
    (run / "env.json").write_text("{}")


def fake_study(out: Path, sick: bool = False) -> None:
    """Two points x three seeds; point `low` has the lower validation loss in every seed."""
    points = []
    for name, lr, shift in (("low", 0.001, 0.0), ("high", 0.01, 0.3)):
        runs = []
        for k in range(3):
            run = name if k == 0 else f"{name}-seed{k}"
            fake_run(out / "runs" / run, k, lr, [1.0 + shift + 0.01 * k, 0.8 + shift + 0.02 * k],
                     0.8 - shift, one_class=sick and name == "high" and k == 2)
            runs.append({"name": run, "seed": k})
        points.append({"name": name, "values": {"optimizer.lr": lr}, "runs": runs})
    record = {"format": "hemacnn-study/1", "study": "made-up", "title": "A made-up study",
              "profile": "cpu", "profile_note": "", "overrides": [], "command": "",
              "points": points, "columns": {"optimizer": "optimizer.name", "lr": "optimizer.lr",
                                            "rho": "optimizer.rho"},
              "summary": {"metrics": ["final_val_loss", "test_macro_f1"], "per_class_f1": True},
              "figures": [{"kind": "curves"}, {"kind": "bars", "metrics": ["test_macro_f1"]},
                          {"kind": "step_loss"}, {"kind": "train_val"}],
              "paper": [{"column": "test_macro_f1", "source": "Table X",
                         "values": {"low": 0.9}}],
              "claims": [{"id": "low-wins", "section": "IV-E", "text": "low beats high",
                          "kind": "lower", "metric": "final_val_loss", "a": "low",
                          "b": "high"}]}
    (out / "study.json").write_text(json.dumps(record))


def test_summary_of_seeds_claims_and_report_from_raw_files(tmp_path, capsys):
    out = tmp_path / "study"
    fake_study(out)
    assert main(["sweep", "--report", str(out)]) == 0
    summary = (out / "summary.csv").read_text().splitlines()
    head = summary[0].split(",")
    assert {"seeds", "final_val_loss", "final_val_loss_sd", "final_val_loss_ci95",
            "degenerate_seeds"} <= set(head)
    low = dict(zip(head, summary[1].split(","), strict=True))
    assert low["point"] == "low" and low["seeds"] == "3"
    assert float(low["final_val_loss"]) == pytest.approx(0.82)  # mean of 0.80, 0.82, 0.84
    assert float(low["final_val_loss_sd"]) == pytest.approx(0.02)
    assert low["rho"] == ""  # an Adam row shows no rho
    seeds = (out / "summary_seeds.csv").read_text().splitlines()
    assert len(seeds) == 1 + 6
    claims = (out / "claims.csv").read_text()
    assert "low-wins" in claims and ",agrees," in claims
    md = (out / "summary.md").read_text()
    assert "| low-wins | IV-E | low beats high | final_val_loss | low - high: -0.3 ± " in md
    assert "**agrees**" in md and "No run is degenerate" in md
    assert "| 0.82 ± 0.05" in md  # mean ± 95% half-width (t(2) 0.02/sqrt 3 = 0.0497)
    assert "| f1_A | f1_B |" in md and "f1_A_ci95" not in md  # per class: mean ± in one cell
    pngs = sorted((out / "figures").glob("*.png"))
    assert len(pngs) == 4

    # The same raw files elsewhere (a fresh clone's docs/results/<study>): identical summary.
    copy = tmp_path / "clone" / "made-up"
    (out / "runs" / "low" / "checkpoints").mkdir()  # what is not a raw file stays behind
    (out / "runs" / "low" / "checkpoints" / "last.ckpt").write_bytes(b"x" * 1000)
    copied = copy_raw_files(out, copy)
    assert len(copied) == 1 + 6 * len(RAW_FILES)
    assert not (copy / "runs" / "low" / "checkpoints").exists()
    assert main(["sweep", "--report", str(copy)]) == 0
    assert (copy / "summary.md").read_text() == md
    assert (copy / "summary.csv").read_text() == (out / "summary.csv").read_text()


def test_a_degenerate_seed_makes_its_claims_not_tested(tmp_path):
    out = tmp_path / "study"
    fake_study(out, sick=True)
    assert main(["sweep", "--report", str(out)]) == 0
    md = (out / "summary.md").read_text()
    assert "1 of 6 runs are degenerate" in md
    assert "- high-seed2: predicts 1 of 2 classes on test (B)" in md
    assert "**not tested**" in md and "high: seed 2: predicts 1 of 2 classes on test (B)" in md
    row = (out / "summary.csv").read_text().splitlines()
    head = row[0].split(",")
    assert dict(zip(head, row[2].split(","), strict=True))["degenerate_seeds"] == "1"


def test_report_rewrites_a_committed_study_identically(tmp_path):
    """docs/results/input_size holds the raw files of its real runs: --report on a copy of the
    folder (no run folders, no data) rewrites its summary and claims byte for byte."""
    committed = Path(__file__).resolve().parents[1] / "docs" / "results" / "input_size"
    copy = tmp_path / "input_size"
    shutil.copytree(committed, copy)
    for name in ("summary.md", "summary.csv", "summary_seeds.csv", "claims.csv"):
        (copy / name).unlink()
    assert main(["sweep", "--report", str(copy)]) == 0
    for name in ("summary.md", "summary.csv", "summary_seeds.csv", "claims.csv"):
        assert (copy / name).read_text() == (committed / name).read_text(), name


def test_a_shared_point_takes_every_run_of_the_other_study(tmp_path):
    """regularization's `plain` is lr_noise's `lr0.0001`: a point shared from another study's
    folder beside this one is read from there (every seed it has), checked against the config
    it would have had, and not counted here."""
    fake_study(tmp_path / "other")
    mine = tmp_path / "mine"
    for k in range(2):  # this study's own point has two seeds, the shared one three
        run = "high" if k == 0 else f"high-seed{k}"
        fake_run(mine / "runs" / run, k, 0.01, [1.3 + 0.01 * k, 1.1 + 0.02 * k], 0.5)
    record = json.loads((tmp_path / "other" / "study.json").read_text())
    low_cfg = yaml.safe_load((tmp_path / "other" / "runs" / "low" / "config.yaml").read_text())
    record["study"] = "mine"
    record["points"] = [
        {"name": "low", "values": {}, "runs": [], "shared": "other/low",
         "config": {**low_cfg, "name": "mine-low"}},
        {"name": "high", "values": {}, "runs": [{"name": "high", "seed": 0},
                                                {"name": "high-seed1", "seed": 1}]}]
    (mine / "study.json").write_text(json.dumps(record))
    assert main(["sweep", "--report", str(mine)]) == 0
    seeds = (mine / "summary_seeds.csv").read_text().splitlines()
    assert len(seeds) == 1 + 3 + 2 and sum(",other," in r for r in seeds) == 3
    assert ",agrees," in (mine / "claims.csv").read_text()  # paired over the 2 shared seeds
    md = (mine / "summary.md").read_text()
    assert "Points low are shared: their runs are other's" in md
    # Only this study's own runs travel with its raw files.
    copied = copy_raw_files(mine, tmp_path / "copy" / "mine")
    assert len(copied) == 1 + 2 * len(RAW_FILES)

    # Trained with another config: one error naming both folders and the first key.
    record["points"][0]["config"]["optimizer"]["lr"] = 0.5
    (mine / "study.json").write_text(json.dumps(record))
    with pytest.raises(HemacnnError, match=r"shared from .*other/runs/low, but that run was "
                                           r"trained with another config: optimizer.lr is "
                                           r"0.001 there and 0.5 here"):
        write_summary(mine)
    # The other study has not run (no folder beside this one): say which and where.
    shutil.rmtree(tmp_path / "other")
    with pytest.raises(HemacnnError, match=r"shared from other/low, but .*other holds no "
                                           r"study \(no study.json\): run study other"):
        write_summary(mine)


STUDIES = Path(__file__).resolve().parents[1] / "configs" / "studies"


@pytest.mark.parametrize("study", ["input_size", "balancing", "lr_noise", "regularization",
                                   "architectures", "optimizers"])
def test_committed_study_json_holds_its_study_files_claims(tmp_path, study):
    """Each committed docs/results/<study>/study.json is what `hemacnn sweep STUDY.yaml --report
    DIR` re-reads from the study file (claims, settings, shared points): a claim edited in the
    study file and not re-derived into the committed folder fails here."""
    committed = Path(__file__).resolve().parents[1] / "docs" / "results" / study
    copy = tmp_path / study
    copy.mkdir()
    shutil.copy2(committed / "study.json", copy / "study.json")
    if (committed / "runs").is_dir():  # a shared point's config is read from the folder's runs
        shutil.copytree(committed / "runs", copy / "runs")
    refresh_record(copy, STUDIES / f"{study}.yaml")
    assert json.loads((copy / "study.json").read_text()) == \
        json.loads((committed / "study.json").read_text())


def test_a_sweep_checks_shared_points_before_training(tmp_path):
    """A shared point is not trained; the sweep stops at once when the other study has not
    run, or when its run was trained with another config (naming both)."""
    base = Path(__file__).resolve().parents[1] / "configs" / "paper" / "mv3.yaml"
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump({
        "base": str(base), "points": [{"name": "plain", "set": {"optimizer.lr": 0.0001}},
                                      {"name": "own", "set": {"optimizer.lr": 0.001}}],
        "profiles": {"cpu": {"shared": {"plain": "other/lr0.0001"}}}}))
    spec = load_study(tmp_path / "mine.yaml")
    points = expand_points(spec, "cpu", ["data.root=/d"])
    assert [p.name for p in points if p.shared] == ["plain"]
    out = tmp_path / "work" / "mine"
    with pytest.raises(HemacnnError, match=r"shared from other/lr0.0001, but .*work/other "
                                           r"holds no study"):
        check_shared(points, out)
    other = tmp_path / "work" / "other"
    run = other / "runs" / "lr0.0001"
    run.mkdir(parents=True)
    cfg = next(p for p in points if p.name == "plain").config.model_dump(mode="json")
    (run / "config.yaml").write_text(yaml.safe_dump({**cfg, "name": "other-lr0.0001"}))
    (other / "study.json").write_text(json.dumps({"points": [
        {"name": "lr0.0001", "runs": [{"name": "lr0.0001", "seed": 0}]}]}))
    check_shared(points, out)  # the same config but the name: fine
    (run / "config.yaml").write_text(yaml.safe_dump({**cfg, "optimizer": {
        **cfg["optimizer"], "lr": 0.003}}))
    with pytest.raises(HemacnnError, match=r"point plain of .*mine is shared from "
                                           r".*other/runs/lr0.0001, but that run was trained "
                                           r"with another config: optimizer.lr is 0.003 there "
                                           r"and 0.0001 here"):
        check_shared(points, out)
    record = study_record(spec, "cpu", points, ["data.root=/d"])
    plain = next(p for p in record["points"] if p["name"] == "plain")
    assert plain["shared"] == "other/lr0.0001" and plain["runs"] == []  # nothing to train
