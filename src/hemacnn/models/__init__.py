"""The paper's architectures as layer tables, one builder, one registry.

``build_model(name, num_classes, input_size, **options)`` builds any registered model: the
paper's ``mv1``, ``mv2``, ``mv3`` (Tables 2-4) and ``vgg16``, and the zoo's torchvision and timm
networks (``list_models()``, ``hemacnn models``); every model returns logits and carries
``hemacnn_arch``.
"""

from hemacnn.models.builder import GaussianNoise, PaperNet
from hemacnn.models.normalize import InputNormalization, NormalizedNet, core_model
from hemacnn.models.penalty import kernel_weights, l2_penalty
from hemacnn.models.registry import (
    build_model,
    count_parameters,
    input_channels,
    list_models,
    min_input_size,
    models_table,
)

__all__ = [
    "GaussianNoise",
    "InputNormalization",
    "NormalizedNet",
    "PaperNet",
    "build_model",
    "core_model",
    "count_parameters",
    "input_channels",
    "kernel_weights",
    "l2_penalty",
    "list_models",
    "min_input_size",
    "models_table",
]
