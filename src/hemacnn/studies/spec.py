"""Study files: a base config, a grid (or list) of points, profiles, what to tabulate and draw.

A study file (``configs/studies/*.yaml``)::

    study: optimizers                    # default: the file name
    title: Optimizer choice (IV-F)
    base: ../paper/mv3.yaml              # relative to the study file
    set: {trainer.max_epochs: 1}         # dotted overrides for every point
    grid:                                # a mapping (product of its lists) or a list of them
      - name: "adam-b1{optimizer.beta1}" # point name template (default: varying values)
        optimizer.name: adam
        optimizer.beta1: [0.7, 0.8]
    points:                              # and/or explicit points
      - {name: no-noise, set: {model.noise_std: 0}}
    columns: {optimizer: optimizer.name} # summary columns read from each point's config
    summary: {metrics: [final_train_loss], ...}   # see hemacnn.studies.summary
    figures: [{kind: step_loss, panel_by: optimizer}]
    paper: [{column: mean_val_loss, source: Table 5, values: {point-name: 0.60}}]
    notes: [the paper's claims, in words]
    claims: [{id: ..., kind: lower, metric: mean_val_loss, a: ..., b: ...}]  # see verdicts
    seeds: 3                             # every point under 3 seeds (default 1)
    split_per_seed: false                # true: each seed draws its own split too
    profiles:
      paper: {}                          # the default: the paper's full scale
      cpu: {note: ..., set: {...}, grid: ..., points: ..., summary: {...},
            seeds: 3, point_seeds: {adam-b10.8: 7},   # more seeds where a verdict needs them
            shared: {plain: lr_noise/lr0.0001}}      # a point another study runs already
    settings: [model.width, optimizer.lr]  # what each claim row shows, run and paper's

Everything is checked before anything runs: unknown keys, empty grids, duplicate point names and
every point's resolved config (the same validation ``hemacnn train`` applies).

Seeds: seed k of a point (k = 0 .. seeds-1) is its config with ``seed`` + k, which changes the
initial weights and the batch order; ``data.split_seed`` stays the point's own seed, so every
seed trains on the same split (unless ``split_per_seed``). Seed 0 is the point itself, in run
folder ``runs/<point>``; seed k > 0 is ``runs/<point>-seed<k>``. A profile's ``point_seeds``
gives some points more (or fewer) seeds than the rest, where a power calculation says a verdict
needs them; ``--seeds N`` on the command line sets every point to N.

Shared points: a profile's ``shared: {POINT: STUDY/POINT}`` takes a point's runs from another
study that runs the same config (every key but the run's name and seeds), in that study's folder
beside this one (``--out /X/regularization`` reads ``/X/lr_noise/runs/``): the sweep does not
train it, checks the configs agree, and the summary uses every seed the other study has.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hemacnn.config import Config, build_config, parse_override, read_yaml_mapping
from hemacnn.errors import HemacnnError
from hemacnn.models import min_input_size
from hemacnn.studies.verdicts import ClaimSpec

DEFAULT_PROFILE = "paper"
FIGURE_KINDS = ("step_loss", "curves", "train_val", "bars")  # hemacnn.studies.figures.KINDS
_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_TEMPLATE = re.compile(r"\{([A-Za-z0-9_.]+)\}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PointSpec(_Strict):
    """One explicit point: a name and its dotted overrides."""

    name: str
    set: dict[str, Any] = Field(default_factory=dict)


class ProfileSpec(_Strict):
    """A profile: overrides for every point, optionally its own grid/points and summary."""

    note: str = ""
    set: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, Any] | list[dict[str, Any]] | None = None
    points: list[PointSpec] | None = None
    point_set: dict[str, dict[str, Any]] = Field(default_factory=dict)  # per-point overrides
    summary: dict[str, Any] = Field(default_factory=dict)
    seeds: int | None = Field(None, ge=1)
    point_seeds: dict[str, Annotated[int, Field(ge=1)]] = Field(default_factory=dict)
    claims: list[ClaimSpec] | None = None  # replaces the study's claims under this profile
    shared: dict[str, str] = Field(default_factory=dict)  # point -> "STUDY/POINT" it reuses
    untested: dict[str, str] = Field(default_factory=dict)  # claim id -> why not here


class StudySpec(_Strict):
    """A whole study file (see the module docstring)."""

    study: str = ""
    title: str = ""
    base: str
    set: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, Any] | list[dict[str, Any]] | None = None
    points: list[PointSpec] | None = None
    columns: dict[str, str] = Field(default_factory=dict)
    settings: list[str] = Field(default_factory=list)  # dotted keys each claim row shows
    summary: dict[str, Any] = Field(default_factory=dict)
    figures: list[dict[str, Any]] = Field(default_factory=list)
    paper: list[dict[str, Any]] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    claims: list[ClaimSpec] = Field(default_factory=list)
    seeds: int = Field(1, ge=1)
    split_per_seed: bool = False
    profiles: dict[str, ProfileSpec] = Field(default_factory=dict)
    path: str = Field("", exclude=True)  # set by load_study: where the file was read


@dataclass
class Point:
    """One run of a study: its run name, varying values, full override list and validated
    config; ``point`` is the study point it is seed ``seed`` (0-based) of."""

    name: str
    values: dict[str, Any]
    overrides: list[str]
    config: Config = field(repr=False)
    point: str = ""
    seed: int = 0
    shared: str = ""  # "STUDY/POINT": the runs are that study's point's, not trained here

    def __post_init__(self) -> None:
        self.point = self.point or self.name


def seed_run_name(point: str, k: int) -> str:
    """The run folder name of seed ``k`` of ``point`` (seed 0 is the point itself)."""
    return point if k == 0 else f"{point}-seed{k}"


def _override_text(key: str, value: Any) -> str:
    # JSON is valid YAML flow syntax, so parse_override reads back exactly this value.
    return f"{key}={json.dumps(value)}"


def load_study(path: str | Path) -> StudySpec:
    """Read and check a study file (unknown keys, YAML syntax, base config present)."""
    path = Path(path)
    tree = read_yaml_mapping(path, "study file", "configs/studies/",
                             "keys (base, grid, profiles, ...)")
    try:
        spec = StudySpec.model_validate(tree)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "(top level)"
        if first["type"] == "extra_forbidden":
            section = {"profiles": ProfileSpec, "points": PointSpec}.get(
                str(first["loc"][0]) if len(first["loc"]) > 1 else "", StudySpec)
            valid = ", ".join(k for k in section.model_fields if k != "path")
            raise HemacnnError(f"study file {path}: unknown key {key}; valid keys there: "
                               f"{valid}") from None
        raise HemacnnError(f"study file {path}: key {key}: {first['msg']}") from None
    spec.study = spec.study or path.stem
    spec.path = str(path)
    if not _NAME_OK.match(spec.study):
        raise HemacnnError(f"study file {path}: study name {spec.study!r} may hold only "
                           "letters, digits, '.', '_' and '-'")
    for fig in spec.figures:
        if fig.get("kind") not in FIGURE_KINDS:
            raise HemacnnError(f"study file {path}: figure kind {fig.get('kind')!r} unknown; "
                               f"kinds: {', '.join(FIGURE_KINDS)}")
    if not (path.parent / spec.base).is_file():
        raise HemacnnError(f"study file {path}: base config {spec.base} not found "
                           f"(looked for {path.parent / spec.base})")
    return spec


def _grid_points(grid: dict[str, Any] | list[dict[str, Any]], source: str) -> list[PointSpec]:
    blocks = grid if isinstance(grid, list) else [grid]
    if not blocks or any(not b for b in blocks):
        raise HemacnnError(f"{source}: the grid is empty; list at least one key with values")
    points = []
    for block in blocks:
        block = dict(block)
        template = block.pop("name", None)
        lists = {k: v for k, v in block.items() if isinstance(v, list)}
        for key, values in lists.items():
            if not values:
                raise HemacnnError(f"{source}: grid key {key} has no values")
        for combo in itertools.product(*lists.values()):
            values = {**block, **dict(zip(lists, combo, strict=True))}
            if template:
                name = _TEMPLATE.sub(lambda m, v=values: str(v.get(m.group(1), m.group(0))),
                                     str(template))
            else:
                name = "-".join(v if isinstance(v, str) else f"{k.rsplit('.', 1)[-1]}{v}"
                                for k, v in zip(lists, combo, strict=True)) or "point"
            points.append(PointSpec(name=name, set=values))
    return points


def seeds_of(spec: StudySpec, profile: str, seeds: int | None = None) -> int:
    """How many seeds each point runs: ``seeds``, else the profile's, else the study's."""
    prof = spec.profiles.get(profile, ProfileSpec())
    n = seeds if seeds is not None else prof.seeds if prof.seeds is not None else spec.seeds
    if n < 1:
        raise HemacnnError(f"--seeds must be at least 1 (got {n})")
    return n


def claims_of(spec: StudySpec, profile: str) -> list[ClaimSpec]:
    """The claims tested under ``profile`` (its own list, else the study's); a claim the
    profile's ``untested`` names becomes ``kind: untested`` with the profile's reason."""
    prof = spec.profiles.get(profile, ProfileSpec())
    claims = list(prof.claims if prof.claims is not None else spec.claims)
    unknown = sorted(set(prof.untested) - {c.id for c in claims})
    if unknown:
        raise HemacnnError(f"{spec.path or spec.study}: profile {profile} untested names claim "
                           f"{unknown[0]!r}, which is not a claim; claims: "
                           f"{', '.join(c.id for c in claims)}")
    return [ClaimSpec(id=c.id, section=c.section, text=c.text, kind="untested",
                      reason=prof.untested[c.id]) if c.id in prof.untested else c
            for c in claims]


def expand_points(spec: StudySpec, profile: str = DEFAULT_PROFILE,
                  overrides: list[str] | None = None, seeds: int | None = None) -> list[Point]:
    """The study's runs under ``profile`` with ``overrides`` for all, each config validated:
    every point, then (with several seeds) its other seeds right after it."""
    source = spec.path or spec.study
    n_seeds = seeds_of(spec, profile, seeds)
    if profile not in spec.profiles and profile != DEFAULT_PROFILE:
        known = ", ".join(sorted({DEFAULT_PROFILE, *spec.profiles}))
        raise HemacnnError(f"{source}: no profile {profile!r}; profiles: {known}")
    prof = spec.profiles.get(profile, ProfileSpec())
    grid = prof.grid if prof.grid is not None or prof.points is not None else spec.grid
    explicit = prof.points if prof.grid is not None or prof.points is not None else spec.points
    specs = (_grid_points(grid, source) if grid is not None else []) + list(explicit or [])
    if not specs:
        raise HemacnnError(f"{source}: no points; give a grid or a list of points")
    for key, named in (("point_set", prof.point_set), ("point_seeds", prof.point_seeds),
                       ("shared", prof.shared)):
        unknown = sorted(set(named) - {p.name for p in specs})
        if unknown:
            raise HemacnnError(f"{source}: profile {profile} {key} names {unknown[0]!r}, which "
                               f"is not a point; points: {', '.join(p.name for p in specs)}")
    specs = [PointSpec(name=p.name, set={**p.set, **prof.point_set.get(p.name, {})})
             for p in specs]
    cli = [parse_override(text) for text in overrides or []]
    varying = {k for p in specs for k in p.set}
    clash = sorted(k for k, _ in cli if k in varying)
    if clash:
        raise HemacnnError(f"override {clash[0]} would replace a value the study varies; "
                           "edit the study file (or add a profile) instead")
    base_path = Path(spec.path).parent / spec.base if spec.path else Path(spec.base)
    base = read_yaml_mapping(base_path, "base config", "configs/", "sections (data, model, ...)")
    points: list[Point] = []
    seen: set[str] = set()
    for p in specs:
        if not _NAME_OK.match(p.name):
            raise HemacnnError(f"{source}: point name {p.name!r} may hold only letters, "
                               "digits, '.', '_' and '-'")
        if p.name in seen:
            raise HemacnnError(f"{source}: two points are named {p.name!r}; name them apart")
        seen.add(p.name)
        common = {**spec.set, **prof.set, **p.set}
        # Runs are named after the study and point unless the study names them itself.
        texts = [] if "name" in common else [_override_text("name", f"{spec.study}-{p.name}")]
        texts += [_override_text(k, v) for k, v in common.items()]
        texts += [_override_text(k, v) for k, v in cli]
        # A fresh copy per point: build_config sets overrides inside the nested sections.
        cfg = build_config(copy.deepcopy(base), texts, source=f"{source} point {p.name}")
        _check_model(cfg, f"{source} point {p.name}")
        shared = prof.shared.get(p.name, "")
        if shared and not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$",
                                   shared):
            raise HemacnnError(f"{source}: profile {profile} shares point {p.name} from "
                               f"{shared!r}; write it as STUDY/POINT (e.g. lr_noise/lr0.0001)")
        points.append(Point(p.name, dict(p.set), texts, cfg, shared=shared))
        n_point = n_seeds if seeds is not None else prof.point_seeds.get(p.name, n_seeds)
        for k in range(1, n_point):
            extra = [_override_text("seed", cfg.seed + k)]
            if not spec.split_per_seed and cfg.data.split_seed is None:
                extra.append(_override_text("data.split_seed", cfg.seed))
            seeded = build_config(copy.deepcopy(base), texts + extra,
                                  source=f"{source} point {p.name} seed {k}")
            points.append(Point(seed_run_name(p.name, k), dict(p.set), texts + extra, seeded,
                                point=p.name, seed=k, shared=shared))
    _check_claims(claims_of(spec, profile), [p.name for p in specs], source)
    return points


def _check_claims(claims: list[ClaimSpec], names: list[str], source: str) -> None:
    for c in claims:
        unknown = [n for n in c.points() if n not in names]
        if unknown:
            raise HemacnnError(f"{source}: claim {c.id} names point {unknown[0]!r}, which is "
                               f"not a point here; points: {', '.join(names)}")


def _check_model(cfg: Config, source: str) -> None:
    try:
        need = min_input_size(cfg.model.name)  # also rejects an unknown model, listing all
    except HemacnnError as exc:
        raise HemacnnError(f"{source}: {exc}") from None
    if cfg.data.image_size < need:
        raise HemacnnError(f"{source}: model {cfg.model.name} needs data.image_size >= {need} "
                           f"(got {cfg.data.image_size})")


def summary_params(spec: StudySpec, profile: str) -> dict[str, Any]:
    """The study's summary settings with the profile's on top."""
    prof = spec.profiles.get(profile, ProfileSpec())
    return {**spec.summary, **prof.summary}
