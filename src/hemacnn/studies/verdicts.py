"""A study's claims as data, their verdicts computed from the runs, and degenerate runs.

A claim (``claims:`` in a study file) names a metric of the summary and the points it compares:

``kind: lower`` / ``higher``
    point ``a``'s metric is lower (higher) than point ``b``'s, e.g. "``f1_NGB`` of B - A > 0" is
    ``{kind: higher, metric: f1_NGB, a: B, b: A}``.
``kind: lowest`` / ``highest``
    ``expect`` has the lowest (highest) metric ``among`` the listed points.

The rule (:data:`RULE`): the difference a - b is taken seed by seed (seed k of both points shares
its initial weights' seed and batch order), and a claim is decided only when the mean difference
lies outside its 95 % t-interval over seeds, i.e. ``|mean| > t(0.975, n-1) * sd / sqrt(n)``;
otherwise (or with fewer than two seeds) it is ``inconclusive``. ``lowest``/``highest`` agrees
when ``expect`` beats every other point so, and disagrees when any point beats ``expect`` so.
A claim is ``not tested`` when a point it needs is degenerate in any of its seeds (see
:func:`run_health`): a verdict on a model that learnt nothing is no verdict.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator
from scipy.stats import t

RULE = ("decided only when the mean difference over seeds (paired by seed) lies outside its "
        "95% t-interval; fewer than two seeds, or an interval that holds 0, is inconclusive; "
        "a claim that needs a degenerate point (one class predicted on validation or test, "
        "or test macro-F1 not above the majority-class predictor's) is not tested")


class ClaimSpec(BaseModel):
    """One claim of the paper, stated as data (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    id: str
    section: str = ""
    text: str
    kind: Literal["lower", "higher", "lowest", "highest"]
    metric: str
    a: str | None = None
    b: str | None = None
    among: list[str] | None = None
    expect: str | None = None

    @model_validator(mode="after")
    def _check(self) -> ClaimSpec:
        if self.kind in ("lower", "higher") and not (self.a and self.b):
            raise ValueError(f"claim {self.id}: kind {self.kind} needs points a and b")
        if self.kind in ("lowest", "highest") and not (self.among and self.expect):
            raise ValueError(f"claim {self.id}: kind {self.kind} needs among and expect")
        if self.expect and self.among and self.expect not in self.among:
            raise ValueError(f"claim {self.id}: expect {self.expect} is not among its points")
        return self

    def points(self) -> list[str]:
        """Every point the claim needs."""
        return [self.a, self.b] if self.kind in ("lower", "higher") else list(self.among or [])


class Verdict(StrEnum):
    """What the runs say about a claim."""

    AGREES = "agrees"
    DISAGREES = "disagrees"
    INCONCLUSIVE = "inconclusive"
    NOT_TESTED = "not tested"


@dataclass
class ClaimResult:
    """A claim's verdict and the numbers behind it (``detail``: in words, for the table)."""

    claim: ClaimSpec
    verdict: Verdict
    detail: str
    seeds: int = 0
    degenerate: list[str] = field(default_factory=list)


@dataclass
class RunHealth:
    """Whether one run learnt more than a one-class predictor, and why not."""

    degenerate: bool
    reasons: list[str] = field(default_factory=list)


def majority_baseline(support: Mapping[str, int]) -> dict[str, float]:
    """What predicting the most frequent class scores on labels with this class support:
    accuracy, macro-F1 (over the classes present) and the loss of predicting the class shares
    (their entropy, the loss a model that learnt only the class prior reaches)."""
    counts = [int(n) for n in support.values() if n]
    total = sum(counts)
    if not total:
        return {}
    top = max(counts) / total
    return {"baseline_accuracy": top,
            "baseline_macro_f1": (2 * top / (1 + top)) / len(counts),
            "prior_loss": -sum(n / total * math.log(n / total) for n in counts)}


def run_health(test: Mapping[str, Any] | None, val_recall: Mapping[str, float] | None = None
               ) -> RunHealth:
    """A run is degenerate when it predicts one class on the test split (``test``: the run's
    test_metrics.json) or on validation (``val_recall``: the last epoch's per-class recall), or
    when its test macro-F1 does not beat the majority-class predictor's on the same labels."""
    reasons = []
    if test:
        per = test.get("per_class", {})
        predicted = [c for c, v in per.items() if v.get("predicted", 0) > 0]
        if per and len(predicted) <= 1:
            reasons.append(f"predicts one class on test ({', '.join(predicted) or 'none'})")
        base = majority_baseline({c: v.get("support", 0) for c, v in per.items()})
        f1 = test.get("macro_f1")
        if base and f1 is not None and f1 <= base["baseline_macro_f1"] + 1e-9:
            reasons.append(f"test macro-F1 {f1:.3f} not above the majority class's "
                           f"{base['baseline_macro_f1']:.3f}")
    if val_recall:
        hit = [c for c, r in val_recall.items() if r is not None and r > 0]
        if len(hit) <= 1:
            reasons.append(f"predicts one class on validation ({', '.join(hit) or 'none'})")
    return RunHealth(bool(reasons), reasons)


CHANCE_MARGIN = 0.15
"""A best validation accuracy within this of chance (1 / number of classes) is weak learning."""
TINY_VAL = 50
"""A validation set under this many images is tiny: one image moves its accuracy by over 2
points, so best epoch and best accuracy are noise as much as signal."""


def learning_marks(best_val_acc: float | None, n_classes: int | None,
                   val_images: int | None) -> list[str]:
    """Plain-words warnings for one run that is not degenerate but not to be trusted either:
    weak learning (near chance) and a tiny validation set."""
    marks = []
    if best_val_acc is not None and math.isfinite(best_val_acc) and n_classes:
        chance = 1 / n_classes
        if best_val_acc - chance <= CHANCE_MARGIN:
            marks.append(f"weak learning: best validation accuracy {best_val_acc:.3f} is within "
                         f"{CHANCE_MARGIN:g} of chance ({chance:.3f} = 1/{n_classes} classes)")
    if val_images is not None and val_images < TINY_VAL:
        marks.append(f"tiny validation set: {val_images} images (under {TINY_VAL}; one image "
                     f"moves validation accuracy by {100 / max(val_images, 1):.1f} points)")
    return marks


def mark_lines(seeds: Sequence[Mapping[str, Any]]) -> list[str]:
    """summary.md's list of runs with :func:`learning_marks` (empty when none has any)."""
    marked = [r for r in seeds if r.get("marks")]
    if not marked:
        return []
    return [f"{len(marked)} of {len(seeds)} runs need care (weak learning: best validation "
            f"accuracy within {CHANCE_MARGIN:g} of chance, 1/number of classes; tiny "
            f"validation set: under {TINY_VAL} images):", "",
            *[f"- {r['run']}: {r['marks']}" for r in marked], ""]


def t_quantile(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom."""
    return float(t.ppf(0.975, df))


def interval(values: Sequence[float]) -> tuple[float, float | None, float | None]:
    """Mean, sample standard deviation and 95 % t-interval half-width (None below 2 values)."""
    xs = [float(v) for v in values]
    n = len(xs)
    mean = sum(xs) / n
    if n < 2:
        return mean, None, None
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    return mean, sd, t_quantile(n - 1) * sd / math.sqrt(n)


def _paired(a: Mapping[int, float], b: Mapping[int, float]) -> list[float]:
    return [a[k] - b[k] for k in sorted(set(a) & set(b))
            if a[k] is not None and b[k] is not None
            and math.isfinite(a[k]) and math.isfinite(b[k])]


def _decide(diffs: list[float]) -> tuple[int, str]:
    """The sign of a decided difference (+1, -1) or 0 (inconclusive), and the numbers."""
    if not diffs:
        return 0, "no seed has both values"
    mean, _, half = interval(diffs)
    if half is not None and half < 1e-9 * max(1.0, abs(mean)):
        half = 0.0  # seeds that agree exactly, up to rounding
    if half is None:
        return 0, f"{mean:+.4g} (one seed: no interval)"
    text = f"{mean:+.4g} ± {half:.2g} (95%, {len(diffs)} seeds)"
    if abs(mean) > half:
        return (1 if mean > 0 else -1), text
    return 0, text


def evaluate_claim(claim: ClaimSpec, values: Mapping[str, Mapping[int, float]],
                   degenerate: Mapping[str, RunHealth] | None = None) -> ClaimResult:
    """The verdict on ``claim`` from per-seed values (point -> seed -> metric value) and the
    points' health (point -> :class:`RunHealth`, degenerate when any seed is)."""
    degenerate = degenerate or {}
    needed = claim.points()
    sick = [p for p in needed if degenerate.get(p) and degenerate[p].degenerate]
    seeds = min((len(values.get(p, {})) for p in needed), default=0)
    if sick:
        why = "; ".join(f"{p}: {degenerate[p].reasons[0]}" for p in sick)
        return ClaimResult(claim, Verdict.NOT_TESTED, f"degenerate point(s): {why}", seeds, sick)
    missing = [p for p in needed if not values.get(p)]
    if missing:
        return ClaimResult(claim, Verdict.NOT_TESTED,
                           f"no {claim.metric} for {', '.join(missing)}", seeds)
    if claim.kind in ("lower", "higher"):
        sign, text = _decide(_paired(values[claim.a], values[claim.b]))
        want = -1 if claim.kind == "lower" else 1
        verdict = (Verdict.INCONCLUSIVE if sign == 0 else
                   Verdict.AGREES if sign == want else Verdict.DISAGREES)
        return ClaimResult(claim, verdict, f"{claim.a} - {claim.b}: {text}", seeds)
    want = -1 if claim.kind == "lowest" else 1
    beaten, lost, parts = [], [], []
    for other in claim.among:
        if other == claim.expect:
            continue
        sign, text = _decide(_paired(values[claim.expect], values[other]))
        parts.append(f"vs {other}: {text}")
        (beaten if sign == want else lost if sign == -want else []).append(other)
    if lost:
        verdict = Verdict.DISAGREES
    elif len(beaten) == len(claim.among) - 1:
        verdict = Verdict.AGREES
    else:
        verdict = Verdict.INCONCLUSIVE
    return ClaimResult(claim, verdict, f"{claim.expect} {'; '.join(parts)}", seeds)


# --- from a summary's per-seed rows (hemacnn.studies.summary.seed_rows) ---

def point_values(seeds: list[dict[str, Any]], metric: str) -> dict[str, dict[int, float]]:
    """point -> seed index -> the metric's value (what a claim's verdict is computed from)."""
    values: dict[str, dict[int, float]] = {}
    for r in seeds:
        v = r.get(metric)
        if isinstance(v, int | float) and math.isfinite(v):
            values.setdefault(r["point"], {})[r["seed_index"]] = float(v)
    return values


def point_health(seeds: list[dict[str, Any]]) -> dict[str, RunHealth]:
    """point -> degenerate when any of its seeds is (with the first such seed's reasons)."""
    health: dict[str, RunHealth] = {}
    for r in seeds:
        h = health.setdefault(r["point"], RunHealth(False))
        if r["degenerate"] and not h.degenerate:
            health[r["point"]] = RunHealth(True, [f"seed {r['seed_index']}: "
                                                  f"{r['degenerate_why']}"])
    return health


def claim_results(record: dict, seeds: list[dict[str, Any]]) -> list[ClaimResult]:
    """The verdict on every claim of the study record, from the per-seed rows."""
    health = point_health(seeds)
    out = []
    for raw in record.get("claims", []):
        claim = ClaimSpec.model_validate(raw)
        out.append(evaluate_claim(claim, point_values(seeds, claim.metric), health))
    return out
