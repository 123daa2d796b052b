"""A study's claims as data, their verdicts computed from the runs, and degenerate runs.

A claim (``claims:`` in a study file) names the metric(s) of the summary and the points it
compares; each claim is one or more *comparisons*, each a list of per-seed differences:

``kind: lower`` / ``higher``
    point ``a``'s metric is lower (higher) than point ``b``'s (or than the constant ``value``),
    e.g. "``f1_NGB`` of B - A > 0" is ``{kind: higher, metric: f1_NGB, a: B, b: A}``. ``a`` may
    list several points (each against ``b``: "every beta1 below 0.9 beats 0.9") and ``metrics``
    several metrics (each compared: "on every class").
``kind: lowest`` / ``highest``
    ``expect`` has the lowest (highest) metric ``among`` the listed points (``expect`` against
    each other point).
``kind: equivalent``
    an invariance claim: a - b (or a - ``value``; with ``relative: true`` the relative change
    a / b - 1 minus ``value``) lies within ``±margin``, by two one-sided tests (TOST).
``kind: order``
    within point ``a``, each metric of ``order`` is higher than the next (a class order).
``kind: untested``
    a statement the runs cannot test; ``reason`` says why (shown as ``not tested``).

The rule (:data:`RULE`): when both points ran the same seeds the differences are paired by seed
(seed k of both points shares its initial weights' seed and batch order); when one point ran more
seeds than the other (a profile's ``point_seeds``, fixed before the runs) the two points' seeds
are compared as two samples by Welch's unequal-variance t (pairing would drop the extra seeds).
A directional comparison's p-value is the two-sided t-test's, an equivalence's the larger of its
two one-sided tests'
(TOST at 0.05, i.e. the 90 % interval inside ±margin). The p-values of a claim's comparisons are
Holm-adjusted over the claim's comparisons; a comparison is decided when its adjusted p is below
0.05. A claim *agrees* when every comparison is decided the paper's way, *disagrees* when any is
decided the other way (a directional difference of the opposite sign; an equivalence whose
difference lies significantly outside the margin), and is *inconclusive* otherwise (fewer than
two seeds included). ``rows: each`` gives every comparison its own row beside the claim's.
A claim is ``not tested`` when a point it needs is degenerate in any of its seeds (see
:func:`run_health`): a verdict on a model that learnt nothing is no verdict -- unless the claim
says why a degenerate seed does not matter to it (``ignore_degenerate``: e.g. a training-loss or
time-per-epoch claim), for every point or, with ``degenerate_ok``, only for the points named
there (e.g. the weaker model of a "beats" claim, when its failing to learn is what the paper says).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator
from scipy.stats import t

ALPHA = 0.05
RULE = ("differences paired by seed (Welch's two-sample t where one point ran more seeds); "
        "a directional comparison is the two-sided t-test, "
        "an equivalence two one-sided tests (TOST) against the claim's margin; the p-values of "
        "a claim's comparisons are Holm-adjusted over the claim, and a comparison is decided "
        "at adjusted p < 0.05; agrees when every comparison is decided the paper's way, "
        "disagrees when any is decided the other way, else inconclusive (also with fewer than "
        "two seeds); a claim that needs a degenerate point (on the scored checkpoint's test "
        "predictions: at most half of the classes predicted, or macro-F1 not above the "
        "majority-class predictor's) is not tested, unless it says why that does not matter")

class ClaimSpec(BaseModel):
    """One claim of the paper, stated as data (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    id: str
    section: str = ""
    text: str
    kind: Literal["lower", "higher", "lowest", "highest", "equivalent", "order", "untested"]
    metric: str | None = None
    metrics: list[str] | None = None
    a: str | list[str] | None = None
    b: str | None = None
    value: float | dict[str, float] | None = None
    relative: bool = False
    margin: float | None = None
    among: list[str] | None = None
    expect: str | None = None
    order: list[str] | None = None
    rows: Literal["one", "each"] = "one"
    ignore_degenerate: str | None = None
    degenerate_ok: list[str] | None = None  # only these points' degenerate seeds are kept
    reason: str | None = None

    @model_validator(mode="after")
    def _check(self) -> ClaimSpec:
        k, cid = self.kind, self.id
        if k == "untested":
            if not self.reason:
                raise ValueError(f"claim {cid}: kind untested needs a reason")
            return self
        if k == "order":
            if not (isinstance(self.a, str) and self.order and len(self.order) >= 2):
                raise ValueError(f"claim {cid}: kind order needs one point a and an order of "
                                 "two or more metrics")
            return self
        if bool(self.metric) == bool(self.metrics):
            raise ValueError(f"claim {cid}: give metric or metrics (one of them)")
        if k in ("lower", "higher", "equivalent"):
            if not self.a or (self.b is None and self.value is None):
                raise ValueError(f"claim {cid}: kind {k} needs points a and b (or a value)")
            if self.relative and (self.b is None or self.value is None):
                raise ValueError(f"claim {cid}: relative needs b and the paper's value")
        if k == "equivalent" and not (self.margin and self.margin > 0):
            raise ValueError(f"claim {cid}: kind equivalent needs a margin above 0")
        if k in ("lowest", "highest") and not (self.among and self.expect):
            raise ValueError(f"claim {cid}: kind {k} needs among and expect")
        if self.expect and self.among and self.expect not in self.among:
            raise ValueError(f"claim {cid}: expect {self.expect} is not among its points")
        return self

    def targets(self) -> list[str]:
        """The a points (a list, also when one)."""
        return [self.a] if isinstance(self.a, str) else list(self.a or [])

    def metric_list(self) -> list[str]:
        """Every metric the claim reads."""
        if self.kind == "order":
            return list(self.order or [])
        return list(self.metrics or ([self.metric] if self.metric else []))

    def points(self) -> list[str]:
        """Every point the claim needs."""
        if self.kind in ("lowest", "highest"):
            return list(self.among or [])
        return [*self.targets(), *([self.b] if self.b else [])]

    def metric_text(self) -> str:
        """The metric(s) in words, for the tables."""
        return ", ".join(self.metric_list())


class Verdict(StrEnum):
    """What the runs say about a claim."""

    AGREES = "agrees"
    DISAGREES = "disagrees"
    INCONCLUSIVE = "inconclusive"
    NOT_TESTED = "not tested"


@dataclass
class ClaimResult:
    """A claim's verdict and the numbers behind it (``detail``: in words, for the table);
    ``rows``: one result per comparison when the claim asks for them (``rows: each``)."""

    claim: ClaimSpec
    verdict: Verdict
    detail: str
    seeds: int = 0
    degenerate: list[str] = field(default_factory=list)
    label: str = ""  # a comparison's row: which comparison ("" for the claim's own row)
    rows: list[ClaimResult] = field(default_factory=list)

    @property
    def row_id(self) -> str:
        """The row's id: the claim's, with the comparison after a colon for its rows."""
        return f"{self.claim.id}:{self.label}" if self.label else self.claim.id


@dataclass
class RunHealth:
    """Whether one run learnt more than a one-class predictor, and why not; ``unpredicted``:
    the classes it never predicts on test (a warning, not by itself degenerate)."""

    degenerate: bool
    reasons: list[str] = field(default_factory=list)
    unpredicted: list[str] = field(default_factory=list)


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


def run_health(test: Mapping[str, Any] | None) -> RunHealth:
    """A run is degenerate when, on the test split that scored it (``test``: the run's
    test_metrics.json, the scored checkpoint's predictions), it predicts at most half of the
    classes (at most 2 of 4: a model that has not learnt to tell the classes apart), or its
    macro-F1 does not beat the majority-class predictor's on the same labels. The classes it
    never predicts are listed either way."""
    if not test:
        return RunHealth(False)
    reasons = []
    per = test.get("per_class", {})
    predicted = [c for c, v in per.items() if v.get("predicted", 0) > 0]
    unpredicted = [c for c in per if c not in predicted]
    if per and len(predicted) * 2 <= len(per):
        reasons.append(f"predicts {len(predicted)} of {len(per)} classes on test "
                       f"({', '.join(predicted) or 'none'})")
    base = majority_baseline({c: v.get("support", 0) for c, v in per.items()})
    f1 = test.get("macro_f1")
    if base and f1 is not None and f1 <= base["baseline_macro_f1"] + 1e-9:
        reasons.append(f"test macro-F1 {f1:.3f} not above the majority class's "
                       f"{base['baseline_macro_f1']:.3f}")
    return RunHealth(bool(reasons), reasons, unpredicted)


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


def _paired(a: Mapping[int, float], b: Mapping[int, float] | float) -> list[float]:
    """a - b seed by seed over the seeds both have (``b`` a constant: a - b for every seed)."""
    if not isinstance(b, Mapping):
        return [a[k] - b for k in sorted(a) if _ok(a[k])]
    return [a[k] - b[k] for k in sorted(set(a) & set(b)) if _ok(a[k]) and _ok(b[k])]


def _samples(a: Mapping[int, float], b: Mapping[int, float]) -> tuple[list[float], list[float]]:
    """Both points' finite values, each over all its own seeds (for Welch's t)."""
    return ([a[k] for k in sorted(a) if _ok(a[k])], [b[k] for k in sorted(b) if _ok(b[k])])


def _welch(xa: Sequence[float], xb: Sequence[float]) -> tuple[float, float, float]:
    """Mean difference, its standard error and Welch-Satterthwaite degrees of freedom."""
    (ma, sa, _), (mb, sb, _) = interval(xa), interval(xb)
    va, vb = (sa or 0.0) ** 2 / len(xa), (sb or 0.0) ** 2 / len(xb)
    se = math.sqrt(va + vb)
    den = (va ** 2 / (len(xa) - 1) if va else 0.0) + (vb ** 2 / (len(xb) - 1) if vb else 0.0)
    return ma - mb, se, ((va + vb) ** 2 / den) if den else float(len(xa) + len(xb) - 2)


def _ok(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


def _relative(a: Mapping[int, float], b: Mapping[int, float], target: float) -> list[float]:
    """a / b - 1 - target seed by seed (seeds where b is 0 are left out)."""
    return [a[k] / b[k] - 1 - target for k in sorted(set(a) & set(b))
            if _ok(a[k]) and _ok(b[k]) and b[k] != 0]


def _t_p(mean: float, se: float, df: int, side: str) -> float:
    """A t-test's p-value for ``mean`` with standard error ``se``: ``two``-sided, or one-sided
    for the alternative ``gt`` (mean > 0) or ``lt`` (mean < 0). ``se`` 0 (seeds that agree
    exactly): 0 when the mean is on the alternative's side, else 1."""
    if se < 1e-12 * max(1.0, abs(mean)):
        hit = {"two": mean != 0, "gt": mean > 0, "lt": mean < 0}[side]
        return 0.0 if hit else 1.0
    x = mean / se
    if side == "two":
        return float(2 * t.sf(abs(x), df))
    return float(t.sf(x, df) if side == "gt" else t.cdf(x, df))


@dataclass
class Comparison:
    """One comparison of a claim: its label, per-seed differences and what agreeing means
    (``want`` +1: the difference is positive; -1: negative; 0: inside ``±margin``)."""

    label: str
    diffs: list[float]  # paired differences; with ``two`` set, unused (empty)
    want: int
    margin: float = 0.0
    shift: float = 0.0  # added back to the numbers shown (a relative change's paper value)
    p: float = 1.0
    outcome: int = 0  # +1 agrees, -1 disagrees (when decided), 0 undecided
    adjusted: float = 1.0
    text: str = ""
    two: tuple[list[float], list[float]] | None = None  # a's and b's values: Welch's t

    @property
    def seeds(self) -> int:
        """The seeds behind the comparison (the smaller sample's for Welch's t)."""
        return min(map(len, self.two)) if self.two else len(self.diffs)

    @property
    def seeds_text(self) -> str:
        return "/".join(str(len(x)) for x in self.two) if self.two else str(len(self.diffs))

    def test(self) -> None:
        """The comparison's p-value, the outcome it points to, and its numbers in words."""
        n = self.seeds
        if n < 2:
            self.text = (f"{self.label}: no seed has both values" if not n else
                         f"{self.label}: {self.diffs[0] + self.shift:+.4g} (one seed: no test)"
                         if self.diffs else f"{self.label}: one seed: no test")
            return
        if self.two:
            mean, se, df = _welch(*self.two)
        else:
            mean, sd, _ = interval(self.diffs)
            se, df = sd / math.sqrt(n), n - 1
        half = float(t.ppf(0.975, df)) * se
        n = df + 1  # the t-tests below take n - 1 degrees of freedom
        shown = mean + self.shift
        if self.want:
            self.p = _t_p(mean, se, n - 1, "two")
            self.outcome = 1 if mean * self.want > 0 else -1
            self.text = f"{self.label}: {shown:+.4g} ± {_g(half)} (95%), p {_p(self.p)}"
            return
        m = self.margin
        p_in = max(_t_p(mean + m, se, n - 1, "gt"), _t_p(mean - m, se, n - 1, "lt"))
        p_out = min(1.0, 2 * min(_t_p(mean - m, se, n - 1, "gt"),
                                 _t_p(mean + m, se, n - 1, "lt")))
        self.p, self.outcome = (p_in, 1) if p_in <= p_out else (p_out, -1)
        h90 = float(t.ppf(0.95, n - 1)) * se
        self.text = (f"{self.label}: {shown:+.4g}, 90% interval [{shown - h90:+.3g}, "
                     f"{shown + h90:+.3g}] against ±{m:g}"
                     + (f" around {self.shift:+g}" if self.shift else "")
                     + f", TOST p {_p(p_in)}")

    @property
    def decided(self) -> int:
        """+1 or -1 when the Holm-adjusted p decides it, else 0."""
        return self.outcome if self.adjusted < ALPHA else 0


def _g(x: float | None) -> str:
    return "?" if x is None else f"{(0.0 if x < 1e-12 else x):.2g}"


def _p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"= {p:.3g}"


def holm(ps: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of p-values (in their order)."""
    order = sorted(range(len(ps)), key=lambda i: ps[i])
    out = [1.0] * len(ps)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(ps) - rank) * ps[i]))
        out[i] = running
    return out


Values = Mapping[str, Mapping[str, Mapping[int, float]]]  # metric -> point -> seed -> value


def _constant(claim: ClaimSpec, metric: str, point: str) -> float:
    v = claim.value
    if isinstance(v, dict):
        if metric in v:
            return float(v[metric])
        if point in v:
            return float(v[point])
        raise ValueError(f"claim {claim.id}: value names neither {metric} nor {point}")
    return float(v)  # type: ignore[arg-type]


def comparisons(claim: ClaimSpec, values: Values) -> list[Comparison]:
    """A claim's comparisons, each with its per-seed differences (not yet tested)."""
    c, out = claim, []
    multi = len(c.metric_list()) > 1
    if c.kind == "order":
        pv = {m: values.get(m, {}).get(c.a, {}) for m in c.metric_list()}
        return [Comparison(f"{hi} - {lo}", _paired(pv[hi], pv[lo]), 1)
                for hi, lo in zip(c.metric_list(), c.metric_list()[1:], strict=False)]
    pairs = ([(c.expect, o) for o in c.among if o != c.expect]
             if c.kind in ("lowest", "highest") else [(a, c.b) for a in c.targets()])
    want = {"lower": -1, "lowest": -1, "higher": 1, "highest": 1}.get(c.kind, 0)
    for metric in c.metric_list():
        pv = values.get(metric, {})
        for a, b in pairs:
            suffix = f" ({metric})" if multi else ""
            if c.relative:
                target = _constant(c, metric, a)
                diffs = _relative(pv.get(a, {}), pv.get(b, {}), target)
                out.append(Comparison(f"{a} / {b} - 1{suffix}", diffs, 0, c.margin or 0,
                                      target))
                continue
            if b is None:
                target = _constant(c, metric, a)
                diffs, label = _paired(pv.get(a, {}), target), f"{a} - {target:g}{suffix}"
            else:
                va, vb, label = pv.get(a, {}), pv.get(b, {}), f"{a} - {b}{suffix}"
                if set(va) != set(vb):  # one point ran more seeds: two samples, Welch's t
                    out.append(Comparison(label, [], want, c.margin or 0, two=_samples(va, vb)))
                    continue
                diffs = _paired(va, vb)
            out.append(Comparison(label, diffs, want, c.margin or 0))
    return out


def _verdict(comps: Sequence[Comparison]) -> Verdict:
    if any(x.decided < 0 for x in comps):
        return Verdict.DISAGREES
    if comps and all(x.decided > 0 for x in comps):
        return Verdict.AGREES
    return Verdict.INCONCLUSIVE


def evaluate_claim(claim: ClaimSpec, values: Values,
                   degenerate: Mapping[str, RunHealth] | None = None) -> ClaimResult:
    """The verdict on ``claim`` from per-seed values (metric -> point -> seed -> value) and the
    points' health (point -> :class:`RunHealth`, degenerate when any seed is)."""
    if claim.kind == "untested":
        return ClaimResult(claim, Verdict.NOT_TESTED, claim.reason or "")
    degenerate = degenerate or {}
    needed = claim.points()
    sick = [p for p in needed if degenerate.get(p) and degenerate[p].degenerate]
    metrics = claim.metric_list()
    counts = [len(values.get(m, {}).get(p, {})) for m in metrics for p in needed]
    seeds = min(counts, default=0)
    blocking = [p for p in sick if not claim.ignore_degenerate
                or (claim.degenerate_ok is not None and p not in claim.degenerate_ok)]
    if blocking:
        sick = blocking
        why = "; ".join(f"{p}: {degenerate[p].reasons[0]}" for p in sick)
        return ClaimResult(claim, Verdict.NOT_TESTED, f"degenerate point(s): {why}", seeds, sick)
    missing = sorted({p for m in metrics for p in needed if not values.get(m, {}).get(p)})
    if missing:
        return ClaimResult(claim, Verdict.NOT_TESTED,
                           f"no {claim.metric_text()} for {', '.join(missing)}", seeds)
    comps = comparisons(claim, values)
    for x in comps:
        x.test()
    for x, adj in zip(comps, holm([x.p for x in comps]), strict=True):
        x.adjusted = adj
    seeds = min((x.seeds for x in comps), default=0)
    welch = any(x.two for x in comps)
    test = ("Welch t" if welch else "paired t") if any(x.want for x in comps) else \
        ("TOST, Welch" if welch else "TOST, paired")
    n = sorted({x.seeds_text for x in comps}, key=lambda v: [int(i) for i in v.split("/")])
    how = f"{test} over {', '.join(n)} seeds"
    if len(comps) > 1:
        how += f", Holm over {len(comps)} comparisons"
        parts = [f"{x.text} (Holm {_p(x.adjusted)})" for x in comps]
    else:
        parts = [x.text for x in comps]
    if sick:
        how += (f"; degenerate seeds in {', '.join(sick)} kept: {claim.ignore_degenerate}")
    result = ClaimResult(claim, _verdict(comps), "; ".join(parts) + f" ({how})", seeds, sick)
    if claim.rows == "each" and len(comps) > 1:
        result.rows = [ClaimResult(claim, _verdict([x]), f"{x.text} (Holm {_p(x.adjusted)} "
                                   f"over the claim's {len(comps)})", x.seeds, sick,
                                   label=_row_label(claim, x)) for x in comps]
    return result


def _row_label(claim: ClaimSpec, x: Comparison) -> str:
    if claim.metrics and len(claim.metrics) > 1 and len(claim.targets()) <= 1:
        return x.label.rsplit(" (", 1)[-1].rstrip(")")  # the metric
    return x.label.split(" ", 1)[0]  # the point


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
        values = {m: point_values(seeds, m) for m in claim.metric_list()}
        out.append(evaluate_claim(claim, values, health))
    return out
