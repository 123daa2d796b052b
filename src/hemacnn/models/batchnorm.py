"""BatchNorm for fine-tuning: detect folded statistics, re-estimate them without changing the model.

Weights converted from TFLite (``../shared/weights``) have their BatchNorm folded into the
convolutions: every layer has weight 1, running mean 0, running variance 1 - eps. In eval mode
that is the ImageNet network exactly, but in train mode BatchNorm normalises by the batch's
statistics, which undoes the folded scales (a first step from an unrelated function). The fix
is to measure each layer's input mean and variance on training images and rewrite the layer
so its eval-mode function stays the same while its statistics are the measured ones:

    y = (x - m) / sqrt(v + eps) * w + b          (before: m = 0, v = 1 - eps, w = 1)
      = (x - mu) / sqrt(s2 + eps) * w' + b'      (after: the measured mu, s2)
    with w' = w * sqrt(s2 + eps) / sqrt(v + eps),  b' = b + w * (mu - m) / sqrt(v + eps).

Train mode then normalises by batch statistics close to mu, s2, so the first training step
starts from (almost) the pretrained function. The statistics are measured with the network in
eval mode, which is the function being kept: every layer then sees the inputs it will see.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def batchnorm_layers(model: nn.Module) -> list[_BatchNorm]:
    """Every BatchNorm layer with running statistics and an affine transform, in module order."""
    return [m for m in model.modules()
            if isinstance(m, _BatchNorm) and m.track_running_stats and m.affine
            and m.running_mean is not None]


def has_folded_batchnorm(model: nn.Module) -> bool:
    """Whether every BatchNorm layer looks folded: weight 1, running mean 0, variance 1 - eps.

    A freshly initialised layer has variance exactly 1, a trained one anything else; 1 - eps
    on every layer is what folding a convolution's scale leaves behind.
    """
    layers = batchnorm_layers(model)
    if not layers:
        return False
    for bn in layers:
        var_ok = torch.allclose(bn.running_var.float(),
                                torch.full_like(bn.running_var.float(), 1.0 - bn.eps),
                                rtol=0.0, atol=bn.eps / 100)
        if not (var_ok and bool((bn.weight == 1).all()) and bool((bn.running_mean == 0).all())):
            return False
    return True


@dataclass(frozen=True)
class BatchNormEstimate:
    """What :func:`reestimate_batchnorm` did, for the run's log."""

    layers: int
    batches: int
    images: int
    # Largest eval-mode change on the first batch, over the logits and the last BatchNorm's
    # output (the features the head sees: a zero-initialised head makes the logits blind).
    max_change: float
    adapted: bool = False  # test-time adaptation (the function changed on purpose)

    def summary(self) -> str:
        """One line for the run's log."""
        if self.adapted:
            return (f"BatchNorm statistics of {self.layers} layers re-estimated on "
                    f"{self.images} target images ({self.batches} batches); largest change on "
                    f"the first batch in a logit or a feature the head reads: "
                    f"{self.max_change:.2f} (raw network units, not probabilities)")
        return (f"BatchNorm statistics re-estimated on {self.images} training images "
                f"({self.batches} batches) for {self.layers} layers; eval-mode outputs changed "
                f"by at most {self.max_change:.1e}")


def _outputs(model: nn.Module, last_bn: nn.Module | None, x: torch.Tensor
             ) -> list[torch.Tensor]:
    """The model's output and the output of ``last_bn`` for ``x``, in float64."""
    seen: list[torch.Tensor] = []
    hook = last_bn.register_forward_hook(lambda _m, _i, out: seen.append(out.double())) \
        if last_bn is not None else None
    try:
        return [model(x).double(), *seen]
    finally:
        if hook is not None:
            hook.remove()


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor],
                         max_batches: int) -> BatchNormEstimate:
    """Set every BatchNorm's statistics to its eval-mode input's mean/variance over
    ``max_batches`` batches (a cumulative average of per-batch figures), adjusting weight and
    bias so that the eval-mode function is unchanged; per-module train/eval modes are kept."""
    layers = batchnorm_layers(model)
    sums: dict[_BatchNorm, list] = {}

    def measure(bn: _BatchNorm, inputs: tuple[torch.Tensor, ...]) -> None:
        x = inputs[0].double()
        dims = [0, *range(2, x.dim())]
        mean, var = x.mean(dims), x.var(dims, unbiased=False)  # what train mode divides by
        acc = sums.setdefault(bn, [torch.zeros_like(mean), torch.zeros_like(var)])
        acc[0] += mean
        acc[1] += var

    it = iter(batches)
    first = next(it, None) if max_batches > 0 else None
    if first is None:
        return BatchNormEstimate(0, 0, 0, 0.0)
    modes = {m: m.training for m in model.modules()}
    model.eval()
    before = _outputs(model, layers[-1] if layers else None, first)  # the function to keep
    hooks = [bn.register_forward_pre_hook(measure) for bn in layers]
    try:
        n_batches, n_images = _feed(model, itertools.chain([first], it), max_batches)
    finally:
        for h in hooks:
            h.remove()
    for bn in layers:
        if bn not in sums:
            continue
        mu, s2 = (s / n_batches for s in sums[bn])
        m, v = bn.running_mean.double(), bn.running_var.double()
        w, b = bn.weight.double(), bn.bias.double()
        old_std, new_std = (v + bn.eps).sqrt(), (s2 + bn.eps).sqrt()
        bn.bias.copy_(b + w * (mu - m) / old_std)
        bn.weight.copy_(w * new_std / old_std)
        bn.running_mean.copy_(mu)
        bn.running_var.copy_(s2)
    after = _outputs(model, layers[-1] if layers else None, first)
    change = max(float((a - b).abs().max()) for a, b in zip(after, before, strict=True))
    for module, training in modes.items():
        module.training = training
    return BatchNormEstimate(len(sums), n_batches, n_images, change)


def _feed(model: nn.Module, batches: Iterable[torch.Tensor], max_batches: int) -> tuple[int, int]:
    """Run up to ``max_batches`` batches through ``model``; (batches, images) seen."""
    n_batches = n_images = 0
    for x in batches:
        model(x)
        n_batches += 1
        n_images += len(x)
        if n_batches >= max_batches:
            break
    return n_batches, n_images


ADAPT_MAX_BATCHES = 100
"""Test-time adaptation uses at most this many batches (6,400 images at 64 a batch)."""


@torch.no_grad()
def adapt_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor],
                    max_batches: int = ADAPT_MAX_BATCHES) -> BatchNormEstimate:
    """Test-time BatchNorm adaptation (AdaBN, Li et al. 2016): replace every BatchNorm's running
    statistics by those of the target images, keeping weight and bias, so the function changes.

    Unlike :func:`reestimate_batchnorm` (which keeps the function), each layer must see the
    previous layers already normalised by target statistics; so BatchNorm layers (only: dropout
    and noise layers stay in eval mode) run in train mode with a cumulative average
    (``momentum=None``), as ``torch.optim.swa_utils.update_bn`` does. The model ends in eval mode.
    """
    layers = batchnorm_layers(model)
    it = iter(batches)
    first = next(it, None) if max_batches > 0 else None
    if first is None or not layers:
        return BatchNormEstimate(0, 0, 0, 0.0)
    model.eval()
    before = _outputs(model, layers[-1], first)
    momenta = {bn: bn.momentum for bn in layers}
    try:
        for bn in layers:
            bn.reset_running_stats()
            bn.momentum = None
            bn.train()
        n_batches, n_images = _feed(model, itertools.chain([first], it), max_batches)
    finally:
        for bn, momentum in momenta.items():
            bn.momentum = momentum
        model.eval()
    after = _outputs(model, layers[-1], first)
    change = max(float((a - b).abs().max()) for a, b in zip(after, before, strict=True))
    return BatchNormEstimate(len(layers), n_batches, n_images, change, adapted=True)
