"""Class shares corrected for the model's own errors: adjusted classify-and-count.

A classifier's predicted shares ``q`` are, in expectation, ``C^T p``: the true shares ``p``
passed through its confusion ``C`` (row i: how the cells of class i are called, measured on the
model's test split). :func:`adjusted_shares` inverts that by maximum likelihood on the simplex
with the EM iteration for a mixture of known components, the hard-label form of the prior
correction of Saerens, Latinne & Decaestecker (2002, Neural Computation 14:21-41):
``p <- p * C (q / C^T p)``. Every iterate is a share vector (non-negative, summing to one),
where the plain inverse ``C^-T q`` goes negative whenever the counting noise outruns the
correction.

The 95% interval is a percentile bootstrap over both sources of error, vectorised over the
resamples: the predicted cells (their counts redrawn, multinomial) and the test split the
confusion came from (its cells redrawn with replacement within each true class, as the split
is stratified). A class with fewer than ``min_test_cells`` test cells is not adjusted: its row
of ``C`` is taken as a perfect call (its own errors cannot be measured) and its figures are the
raw ones, marked ``adjusted = False``.

Arrays in, arrays out: predict's differential and serve can share it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hemacnn.errors import HemacnnError
from hemacnn.scoring.metrics import wilson_interval

MIN_TEST_CELLS = 10
"""A class with fewer test cells than this has no measured recall worth correcting with."""
RESAMPLES = 1000
LEVEL = 0.95


@dataclass(frozen=True)
class AdjustedShares:
    """Per class (the confusion's order): adjusted share with its bootstrap interval, and the
    test figures behind it. Shares are fractions (0..1)."""

    share: np.ndarray  # point estimate; for a class not adjusted, the raw share
    low: np.ndarray
    high: np.ndarray
    recall: np.ndarray  # test recall (NaN for a class without test cells)
    test_cells: np.ndarray  # test cells of each true class
    adjusted: np.ndarray  # bool: enough test cells to correct the class's share
    resamples: int
    seed: int


def em_shares(observed: np.ndarray, confusion: np.ndarray, tol: float = 1e-7,
              max_iter: int = 5000) -> np.ndarray:
    """The true shares (..., K) whose expected predicted shares ``p @ confusion`` best explain
    the ``observed`` predicted shares (..., K), by EM (maximum likelihood on the simplex).

    ``confusion`` (..., K, K) is row-normalised; leading axes are resamples, solved together.
    """
    observed = np.asarray(observed, dtype=float)
    confusion = np.asarray(confusion, dtype=float)
    p = np.full(observed.shape, 1.0 / observed.shape[-1])
    for _ in range(max_iter):
        implied = (p[..., None, :] @ confusion)[..., 0, :]
        ratio = np.divide(observed, implied, out=np.zeros_like(observed), where=implied > 0)
        new = p * (confusion @ ratio[..., None])[..., 0]
        # Cells called as a class no test cell was called as are unexplained: renormalise.
        new /= np.maximum(new.sum(axis=-1, keepdims=True), 1e-300)
        done = np.max(np.abs(new - p)) < tol
        p = new
        if done:
            break
    return p


def _normalised(counts: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """Row-normalised confusion; the rows of classes not ``usable`` (..., K) are the identity."""
    rows = counts.sum(axis=-1, keepdims=True)
    norm = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
    eye = np.eye(counts.shape[-1])
    return np.where(usable[..., None], norm, eye)


def adjusted_shares(predicted: np.ndarray, confusion: np.ndarray,
                    min_test_cells: int = MIN_TEST_CELLS, resamples: int = RESAMPLES,
                    seed: int = 0, level: float = LEVEL) -> AdjustedShares:
    """Adjusted classify-and-count: ``predicted`` counts per class (K,) and the model's test
    ``confusion`` counts (K, K; row = true class, column = predicted) give the true shares, a
    ``level`` percentile-bootstrap interval over ``resamples`` draws of both, seeded."""
    predicted = np.asarray(predicted, dtype=np.int64)
    confusion = np.asarray(confusion, dtype=np.int64)
    k = predicted.shape[0]
    if confusion.shape != (k, k):
        raise HemacnnError(f"the confusion matrix has shape {confusion.shape}, expected "
                           f"({k}, {k}) for {k} classes")
    if predicted.min(initial=0) < 0 or confusion.min(initial=0) < 0:
        raise HemacnnError("counts must not be negative")
    n = int(predicted.sum())
    if n == 0:
        raise HemacnnError("no predicted cells to count")
    test_cells = confusion.sum(axis=1)
    usable = test_cells >= min_test_cells
    recall = np.divide(np.diag(confusion), test_cells, out=np.full(k, np.nan),
                       where=test_cells > 0)
    q = predicted / n
    share = em_shares(q, _normalised(confusion, usable))

    rng = np.random.default_rng(seed)
    boot_q = rng.multinomial(n, q, size=resamples) / n  # (B, K)
    boot_cm = np.zeros((resamples, k, k))
    for i in np.flatnonzero(test_cells):  # stratified: each true class keeps its test cells
        boot_cm[:, i, :] = rng.multinomial(test_cells[i], confusion[i] / test_cells[i],
                                           size=resamples)
    boot = em_shares(boot_q, _normalised(boot_cm, np.broadcast_to(usable, (resamples, k))))
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(boot, [tail, 100.0 - tail], axis=0)
    for i in np.flatnonzero(~usable):  # the raw figures: share and Wilson interval
        share[i] = q[i]
        low[i], high[i] = wilson_interval(int(predicted[i]), n)
    return AdjustedShares(share=share, low=low, high=high, recall=recall,
                          test_cells=test_cells, adjusted=usable, resamples=resamples,
                          seed=seed)
